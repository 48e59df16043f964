// A Kafka cluster's brokers and its KRaft controller quorum, as one line of JSON, through the Admin API of
// the kafka-clients jar the project runs (what kafka-metadata-quorum.sh prints, whose tools jar is not
// among them). Java runs the source as it is:
//
//     java -cp '.stack/kafka/libs/*' infra/kafka/DescribeQuorum.java HOST:PORT[,HOST:PORT...]
//
// It logs in (SASL/SCRAM-SHA-256) as FLYWHEEL_KAFKA_USERNAME with FLYWHEEL_KAFKA_PASSWORD, the environment
// every Flywheel client reads (flywheel.common.kafka.client_security), when that is set: describing the
// quorum takes the admin (`python infra/stack.py run -- java ...` sets its login).
//
// {"brokers": [1, 2, 3], "leader": 2, "epoch": 1, "high_watermark": 420,
//  "voters": [{"id": 1, "log_end_offset": 420, "lag": 0}, ...], "observers": [...]}
import java.util.List;
import java.util.Properties;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.common.Node;

public class DescribeQuorum {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        String user = System.getenv().getOrDefault("FLYWHEEL_KAFKA_USERNAME", "");
        if (!user.isEmpty()) {
            config.put("security.protocol", "SASL_PLAINTEXT");
            config.put("sasl.mechanism", "SCRAM-SHA-256");
            config.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    + "username=\"" + user + "\" password=\"" + System.getenv("FLYWHEEL_KAFKA_PASSWORD") + "\";");
        }
        try (Admin admin = Admin.create(config)) {
            QuorumInfo quorum = admin.describeMetadataQuorum().quorumInfo().get();
            String brokers = admin.describeCluster().nodes().get().stream()
                    .map(Node::id).sorted().map(String::valueOf).collect(Collectors.joining(", "));
            long watermark = quorum.highWatermark();
            System.out.printf(
                    "{\"brokers\": [%s], \"leader\": %d, \"epoch\": %d, \"high_watermark\": %d, "
                            + "\"voters\": %s, \"observers\": %s}%n",
                    brokers, quorum.leaderId(), quorum.leaderEpoch(), watermark,
                    replicas(quorum.voters(), watermark), replicas(quorum.observers(), watermark));
        }
    }

    private static String replicas(List<QuorumInfo.ReplicaState> states, long watermark) {
        return states.stream()
                .map(s -> String.format("{\"id\": %d, \"log_end_offset\": %d, \"lag\": %d}",
                        s.replicaId(), s.logEndOffset(), watermark - s.logEndOffset()))
                .collect(Collectors.joining(", ", "[", "]"));
    }
}
