// Kafka's logins and ACLs, from a plan (flywheel.common.kafkaaccess writes it): run once the brokers are up,
// by the launcher (infra/launcher/kafka.py) and by compose's one-shot `kafka-access`, on the broker's own jars:
//
//   java -cp 'libs/*' Access.java <brokers> <plan file>
//
// It logs in to the brokers as the admin (SCRAM-SHA-256: the admin's credential is the one the storage was
// formatted with, `StorageTool format --add-scram`), sets each user's SCRAM-SHA-256 credential and makes the
// cluster's ACLs exactly the plan's (a binding of a plan's user that the plan no longer has is deleted).
// Plan lines, space-separated (passwords are URL-safe, without spaces):
//
//   admin <password>                                         the super user, whose login this tool uses
//   user <name> <password>                                   a SCRAM-SHA-256 login
//   allow <principal> <topic|group> <literal|prefixed> <resource name> <read|write>
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Access {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: Access <brokers> <plan file>");
            System.exit(2);
        }
        String adminPassword = null;
        List<UserScramCredentialAlteration> logins = new ArrayList<>();
        Set<AclBinding> wanted = new HashSet<>();
        Set<String> principals = new HashSet<>();
        for (String line : Files.readAllLines(Path.of(args[1]))) {
            String[] f = line.trim().split(" ");
            if (f[0].isEmpty() || f[0].startsWith("#")) continue;
            switch (f[0]) {
                case "admin" -> {
                    adminPassword = f[1];
                    logins.add(scram("admin", f[1]));
                }
                case "user" -> {
                    logins.add(scram(f[1], f[2]));
                    principals.add("User:" + f[1]);
                }
                case "allow" -> wanted.add(new AclBinding(
                        new ResourcePattern(ResourceType.fromString(f[2].toUpperCase()), f[4], PatternType.fromString(f[3].toUpperCase())),
                        new AccessControlEntry("User:" + f[1], "*", AclOperation.fromString(f[5].toUpperCase()), AclPermissionType.ALLOW)));
                default -> throw new IllegalArgumentException("plan: unknown line kind " + f[0]);
            }
        }
        if (adminPassword == null) throw new IllegalArgumentException("plan: no admin line");

        Properties brokers = new Properties();
        brokers.put("bootstrap.servers", args[0]);
        brokers.put("security.protocol", "SASL_PLAINTEXT");
        brokers.put("sasl.mechanism", "SCRAM-SHA-256");
        brokers.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required "
                + "username=\"admin\" password=\"" + adminPassword + "\";");
        brokers.put("default.api.timeout.ms", "60000");
        try (Admin admin = Admin.create(brokers)) {
            admin.alterUserScramCredentials(logins).all().get();
            Set<AclBinding> present = new HashSet<>(admin.describeAcls(AclBindingFilter.ANY).values().get());
            List<AclBinding> create = new ArrayList<>(wanted);
            create.removeAll(present);
            List<AclBindingFilter> delete = new ArrayList<>();
            for (AclBinding binding : present) {
                if (!wanted.contains(binding) && principals.contains(binding.entry().principal())) {
                    delete.add(binding.toFilter());
                }
            }
            if (!create.isEmpty()) admin.createAcls(create).all().get();
            if (!delete.isEmpty()) admin.deleteAcls(delete).all().get();
            System.out.printf("kafka access: %d SCRAM logins, %d ACLs (%d new, %d removed)%n",
                    logins.size(), wanted.size(), create.size(), delete.size());
        }
    }

    static UserScramCredentialAlteration scram(String user, String password) {
        return new UserScramCredentialUpsertion(user, new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), password);
    }

}
