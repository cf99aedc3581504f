package chronik.clients;

import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Produces `--count` records `<prefix>-<i>` (key `k<i>`) to `--topic` with the Java producer's
 * defaults (Kafka 4: acks=all, idempotence on) and prints a JSON line per acknowledgement when
 * `--each` is given, then a summary line. `--interval-ms` spaces the sends so a test can act
 * (kill a leader) while they go on. Exits 0 once every record was acknowledged, 1 otherwise.
 *
 * With `--transactional-id` the records go in transactions of `--txn-records` each, every
 * `--abort-every`-th of them aborted on purpose (0: none); the summary then also counts the
 * committed and aborted transactions, and `committed_values` lists the committed records.
 */
public final class Produce {
    public static void main(String[] argv) throws Exception {
        Args args = new Args(argv);
        String topic = args.str("topic");
        int count = args.integer("count", 100);
        int intervalMs = args.integer("interval-ms", 0);
        boolean each = args.flag("each");
        String prefix = args.str("prefix", "v");
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.str("bootstrap"));
        props.put(ProducerConfig.ACKS_CONFIG, args.str("acks", "all"));
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, args.str("idempotence", "true"));
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, args.integer("delivery-timeout-ms", 60_000));
        props.put(ProducerConfig.LINGER_MS_CONFIG, args.integer("linger-ms", 5));
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, args.str("compression", "none"));
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        String transactionalId = args.str("transactional-id", "");
        if (!transactionalId.isEmpty()) {
            props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
            transactional(props, topic, count, prefix, args.integer("txn-records", 10),
                          args.integer("abort-every", 0));
            return;
        }

        AtomicInteger acked = new AtomicInteger();
        List<String> errors = new ArrayList<>();
        long start = System.nanoTime();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < count; i++) {
                String value = prefix + "-" + i;
                producer.send(new ProducerRecord<>(topic, "k" + i, value), (md, err) -> {
                    if (err != null) {
                        synchronized (errors) { errors.add(value + ": " + err); }
                        return;
                    }
                    acked.incrementAndGet();
                    if (each) Json.line(Json.obj("acked", value, "partition", md.partition(), "offset", md.offset()));
                });
                if (intervalMs > 0) Thread.sleep(intervalMs);
            }
            producer.flush();
        }
        long elapsedMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        synchronized (errors) {
            Json.line(Json.obj("produced", acked.get(), "count", count, "errors",
                               errors.subList(0, Math.min(errors.size(), 20)), "elapsed_ms", elapsedMs));
            System.exit(acked.get() == count && errors.isEmpty() ? 0 : 1);
        }
    }

    private static void transactional(Properties props, String topic, int count, String prefix, int perTxn,
                                      int abortEvery) {
        int committed = 0, aborted = 0;
        List<String> committedValues = new ArrayList<>();
        String error = null;
        long start = System.nanoTime();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            producer.initTransactions();
            for (int first = 0, txn = 1; first < count; first += perTxn, txn++) {
                producer.beginTransaction();
                List<String> values = new ArrayList<>();
                for (int i = first; i < Math.min(first + perTxn, count); i++) {
                    String value = prefix + "-" + i;
                    producer.send(new ProducerRecord<>(topic, "k" + i, value));
                    values.add(value);
                }
                if (abortEvery > 0 && txn % abortEvery == 0) {
                    producer.flush();  // written, then aborted: read_committed readers must skip them
                    producer.abortTransaction();
                    aborted++;
                } else {
                    producer.commitTransaction();
                    committed++;
                    committedValues.addAll(values);
                }
            }
        } catch (Exception e) {
            error = e.toString();
        }
        long elapsedMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        Json.line(Json.obj("committed", committed, "aborted", aborted, "committed_values", committedValues,
                           "error", error == null ? "" : error, "elapsed_ms", elapsedMs));
        System.exit(error == null ? 0 : 1);
    }
}
