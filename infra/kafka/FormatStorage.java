// Kafka's StorageTool `format`, with the admin's SCRAM login added from the environment
// (FLYWHEEL_KAFKA_ADMIN_PASSWORD) rather than from the command line, where any local user could read it:
//
//   FLYWHEEL_KAFKA_ADMIN_PASSWORD=... java -cp 'libs/*' FormatStorage.java format --cluster-id ... --config ...
import java.util.Arrays;

public class FormatStorage {
    public static void main(String[] args) {
        String password = System.getenv("FLYWHEEL_KAFKA_ADMIN_PASSWORD");
        if (password == null || password.isEmpty()) {
            System.err.println("FormatStorage: FLYWHEEL_KAFKA_ADMIN_PASSWORD is not set");
            System.exit(2);
        }
        String[] all = Arrays.copyOf(args, args.length + 2);
        all[args.length] = "--add-scram";
        all[args.length + 1] = "SCRAM-SHA-256=[name=admin,password=" + password + "]";
        kafka.tools.StorageTool.main(all);
    }
}
