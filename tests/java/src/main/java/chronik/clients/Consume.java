package chronik.clients;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Joins `--group` (classic protocol) subscribed to `--topic` (a comma-separated list), reads from the earliest offset
 * until `--expect` records arrived or `--timeout-s` passed, committing synchronously after each
 * poll, then prints one JSON line per record (`--each`), the committed offsets as the group
 * coordinator returns them, and a summary. Exits 0 when it read at least `--expect` records.
 */
public final class Consume {
    public static void main(String[] argv) {
        Args args = new Args(argv);
        String topic = args.str("topic");
        String group = args.str("group");
        int expect = args.integer("expect", 1);
        long deadline = System.nanoTime() + args.integer("timeout-s", 60) * 1_000_000_000L;
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.str("bootstrap"));
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, args.str("isolation", "read_uncommitted"));
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        // Small limits make the consumer fetch many times (fetch sessions, KIP-227).
        props.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, args.integer("max-partition-fetch-bytes", 1 << 20));
        props.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, args.integer("fetch-max-bytes", 50 << 20));

        int consumed = 0;
        boolean each = args.flag("each");
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(topic.split(",")));
            while (consumed < expect && System.nanoTime() < deadline) {
                var records = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<String, String> r : records) {
                    consumed++;
                    if (each) Json.line(Json.obj("topic", r.topic(), "partition", r.partition(), "offset", r.offset(),
                                                 "key", r.key(), "value", r.value()));
                }
                if (!records.isEmpty()) consumer.commitSync(Duration.ofSeconds(30));
            }
            Map<String, Long> committed = new TreeMap<>();
            var parts = consumer.assignment();
            Map<TopicPartition, OffsetAndMetadata> got = consumer.committed(parts, Duration.ofSeconds(30));
            boolean many = topic.contains(",");
            got.forEach((tp, om) -> committed.put(many ? tp.toString() : String.valueOf(tp.partition()),
                                                  om == null ? null : om.offset()));
            Json.line(Json.obj("consumed", consumed, "assigned", parts.size(), "committed", committed));
        }
        System.exit(consumed >= expect ? 0 : 1);
    }
}
