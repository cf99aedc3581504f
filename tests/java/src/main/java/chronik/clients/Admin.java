package chronik.clients;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;

/**
 * Runs AdminClient calls given as arguments after `--bootstrap <b>`, each `op:arg:arg`, in
 * order, printing one JSON line per call (`{"op": ..., ...}` or `{"op": ..., "error": ...}`):
 * create:TOPIC:PARTITIONS:RF, describe:TOPIC, list, add-partitions:TOPIC:TOTAL, delete:TOPIC,
 * topic-configs:TOPIC, broker-configs:ID, cluster, groups, describe-group:GROUP,
 * group-offsets:GROUP, delete-group:GROUP. Exits 1 if any call failed.
 */
public final class Admin {
    private static final long CALL_TIMEOUT_S = 60;

    public static void main(String[] argv) throws Exception {
        if (argv.length < 2 || !argv[0].equals("--bootstrap")) throw new IllegalArgumentException("--bootstrap B op...");
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, argv[1]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 60_000);
        boolean failed = false;
        try (AdminClient admin = AdminClient.create(props)) {
            for (String spec : Arrays.copyOfRange(argv, 2, argv.length)) {
                String[] a = spec.split(":");
                try {
                    Map<String, Object> out = Json.obj("op", a[0]);
                    out.putAll(run(admin, a));
                    Json.line(out);
                } catch (ExecutionException e) {
                    failed = true;
                    Throwable c = e.getCause();
                    Json.line(Json.obj("op", a[0], "error", c.getClass().getSimpleName() + ": " + c.getMessage()));
                }
            }
        }
        System.exit(failed ? 1 : 0);
    }

    private static Map<String, Object> run(AdminClient admin, String[] a) throws Exception {
        switch (a[0]) {
            case "create" -> {
                admin.createTopics(List.of(new NewTopic(a[1], Integer.parseInt(a[2]), Short.parseShort(a[3]))))
                     .all().get(CALL_TIMEOUT_S, TimeUnit.SECONDS);
                return Json.obj("topic", a[1]);
            }
            case "describe" -> {
                TopicDescription d = admin.describeTopics(List.of(a[1])).allTopicNames()
                                          .get(CALL_TIMEOUT_S, TimeUnit.SECONDS).get(a[1]);
                List<Object> parts = new ArrayList<>();
                for (TopicPartitionInfo p : d.partitions()) {
                    parts.add(Json.obj("partition", p.partition(), "leader", p.leader() == null ? -1 : p.leader().id(),
                                       "replicas", ids(p.replicas()), "isr", ids(p.isr())));
                }
                return Json.obj("topic", d.name(), "topic_id", d.topicId().toString(), "partitions", parts);
            }
            case "list" -> {
                return Json.obj("topics", new ArrayList<>(new java.util.TreeSet<>(
                    admin.listTopics().names().get(CALL_TIMEOUT_S, TimeUnit.SECONDS))));
            }
            case "add-partitions" -> {
                admin.createPartitions(Map.of(a[1], NewPartitions.increaseTo(Integer.parseInt(a[2]))))
                     .all().get(CALL_TIMEOUT_S, TimeUnit.SECONDS);
                return Json.obj("topic", a[1]);
            }
            case "delete" -> {
                admin.deleteTopics(List.of(a[1])).all().get(CALL_TIMEOUT_S, TimeUnit.SECONDS);
                return Json.obj("topic", a[1]);
            }
            case "topic-configs", "broker-configs" -> {
                var type = a[0].equals("topic-configs") ? ConfigResource.Type.TOPIC : ConfigResource.Type.BROKER;
                ConfigResource r = new ConfigResource(type, a[1]);
                Config c = admin.describeConfigs(List.of(r)).all().get(CALL_TIMEOUT_S, TimeUnit.SECONDS).get(r);
                Map<String, Object> configs = new TreeMap<>();
                c.entries().forEach(e -> configs.put(e.name(), e.value()));
                return Json.obj("configs", configs);
            }
            case "cluster" -> {
                var d = admin.describeCluster();
                List<Object> nodes = new ArrayList<>();
                for (Node n : d.nodes().get(CALL_TIMEOUT_S, TimeUnit.SECONDS)) {
                    nodes.add(Json.obj("id", n.id(), "host", n.host(), "port", n.port(), "rack", n.rack()));
                }
                Node controller = d.controller().get(CALL_TIMEOUT_S, TimeUnit.SECONDS);
                return Json.obj("cluster_id", d.clusterId().get(CALL_TIMEOUT_S, TimeUnit.SECONDS),
                                "controller", controller == null ? -1 : controller.id(), "nodes", nodes);
            }
            case "groups" -> {
                List<Object> groups = new ArrayList<>();
                for (GroupListing g : admin.listGroups().all().get(CALL_TIMEOUT_S, TimeUnit.SECONDS)) {
                    groups.add(Json.obj("group", g.groupId(), "type", String.valueOf(g.type().orElse(null)),
                                        "protocol", g.protocol(), "state", String.valueOf(g.groupState().orElse(null))));
                }
                return Json.obj("groups", groups);
            }
            case "describe-group" -> {
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(a[1])).all()
                                                  .get(CALL_TIMEOUT_S, TimeUnit.SECONDS).get(a[1]);
                List<Object> members = new ArrayList<>();
                d.members().forEach(m -> members.add(Json.obj(
                    "client_id", m.clientId(), "host", m.host(),
                    "partitions", m.assignment().topicPartitions().stream().map(Object::toString).sorted().toList())));
                return Json.obj("group", d.groupId(), "state", d.groupState().toString(), "type", d.type().toString(),
                                "assignor", d.partitionAssignor(),
                                "coordinator", d.coordinator() == null ? -1 : d.coordinator().id(), "members", members);
            }
            case "group-offsets" -> {
                Map<String, Object> offsets = new TreeMap<>();
                admin.listConsumerGroupOffsets(a[1]).partitionsToOffsetAndMetadata()
                     .get(CALL_TIMEOUT_S, TimeUnit.SECONDS)
                     .forEach((tp, om) -> offsets.put(tp.toString(), om == null ? null : om.offset()));
                return Json.obj("offsets", offsets);
            }
            case "delete-group" -> {
                admin.deleteConsumerGroups(List.of(a[1])).all().get(CALL_TIMEOUT_S, TimeUnit.SECONDS);
                return Json.obj("group", a[1]);
            }
            default -> throw new IllegalArgumentException("unknown op " + a[0]);
        }
    }

    private static List<Integer> ids(List<Node> nodes) {
        return nodes.stream().map(Node::id).toList();
    }
}
