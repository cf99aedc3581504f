package chronik.clients;

import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Kafka Streams' word count: lines from `--input` are split into words, grouped by word
 * (through a repartition topic) and counted (in a state store with a changelog topic); the
 * counts go to `--output`. A plain consumer reads `--output` until the latest count of every
 * word adds up to `--words` (the number of words in the input) or `--timeout-s` passed, then
 * prints the counts as one JSON line and the application's final state. `--no-changelog`
 * keeps the counts in a store without a changelog topic (by default Streams logs the store to
 * a compacted changelog topic it creates).
 */
public final class WordCount {
    public static void main(String[] argv) throws Exception {
        Args args = new Args(argv);
        String bootstrap = args.str("bootstrap");
        String output = args.str("output");
        long words = Long.parseLong(args.str("words"));
        long deadline = System.nanoTime() + args.integer("timeout-s", 120) * 1_000_000_000L;

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.str("application-id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args.str("guarantee", StreamsConfig.AT_LEAST_ONCE));
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, args.integer("replication-factor", 1));
        props.put(StreamsConfig.STATE_DIR_CONFIG, args.str("state-dir"));
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 500);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        builder.<String, String>stream(args.str("input"))
               .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\W+")))
               .filter((k, w) -> !w.isEmpty())
               .groupBy((k, w) -> w)
               .count(args.flag("no-changelog")
                      ? Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts").withLoggingDisabled()
                      : Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts"))
               .toStream()
               .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        Map<String, Long> counts = new TreeMap<>();
        try (KafkaStreams streams = new KafkaStreams(builder.build(), props)) {
            streams.setUncaughtExceptionHandler(e -> {
                Json.line(Json.obj("uncaught", e.toString()));
                return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            streams.start();
            readCounts(bootstrap, output, words, deadline, counts, streams);
            Json.line(Json.obj("counts", counts, "state", streams.state().toString()));
            streams.close(Duration.ofSeconds(30));
        }
        long total = counts.values().stream().mapToLong(Long::longValue).sum();
        System.exit(total == words ? 0 : 1);
    }

    private static void readCounts(String bootstrap, String topic, long words, long deadline, Map<String, Long> counts,
                                   KafkaStreams streams) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.GROUP_ID_CONFIG, "wordcount-reader-" + topic);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(props, new StringDeserializer(), new LongDeserializer())) {
            consumer.subscribe(List.of(topic));
            while (System.nanoTime() < deadline && !streams.state().hasCompletedShutdown()
                   && streams.state() != KafkaStreams.State.ERROR && streams.state() != KafkaStreams.State.PENDING_ERROR) {
                consumer.poll(Duration.ofMillis(500)).forEach(r -> counts.put(r.key(), r.value()));
                if (counts.values().stream().mapToLong(Long::longValue).sum() >= words) return;
            }
        }
    }
}
