/*
 * jobkeeper's SQL runner: runs the statements of a jobkeeper SQL job as one Flink job.
 *
 * Arguments: "jobkeeper-sql-v1", the job name (base64), then one argument per statement:
 * "set:<key b64>:<value b64>", "sql:<text b64>" or "insert:<text b64>" (UTF-8, standard base64).
 * SET statements go into the table config, other statements run in order with executeSql, and
 * every INSERT is added to one StatementSet, executed last, with pipeline.name set to the job
 * name. A statement Flink refuses fails the program with "jobkeeper-sql statement N: <reason>".
 *
 * The Table API is called through reflection, so this file compiles with a plain JDK (no Flink
 * jars) and runs on every Flink version with the unified TableEnvironment (1.19 and later, 2.x).
 */

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

public final class JobkeeperSqlRunner {
    private JobkeeperSqlRunner() {}

    private static String decode(String s) {
        return new String(Base64.getDecoder().decode(s), StandardCharsets.UTF_8);
    }

    private static Object callOn(Class<?> type, Object target, String name, Class<?>[] types,
            Object... args) throws Exception {
        return type.getMethod(name, types).invoke(target, args);
    }

    /** The cause a reflective call hides, with the statement's number in front. */
    private static RuntimeException refused(int n, Throwable e) {
        Throwable cause = e instanceof InvocationTargetException && e.getCause() != null
                ? e.getCause() : e;
        return new RuntimeException("jobkeeper-sql statement " + n + ": " + cause.getMessage(), cause);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || !"jobkeeper-sql-v1".equals(args[0])) {
            throw new IllegalArgumentException("usage: jobkeeper-sql-v1 NAME STATEMENT...");
        }
        String name = decode(args[1]);
        ClassLoader loader = Thread.currentThread().getContextClassLoader();
        Class<?> settingsType = Class.forName("org.apache.flink.table.api.EnvironmentSettings", true, loader);
        Class<?> envType = Class.forName("org.apache.flink.table.api.TableEnvironment", true, loader);
        Class<?> configType = Class.forName("org.apache.flink.table.api.TableConfig", true, loader);
        Class<?> setType = Class.forName("org.apache.flink.table.api.StatementSet", true, loader);
        Object settings = callOn(settingsType, null, "inStreamingMode", new Class<?>[0]);
        Object env = callOn(envType, null, "create", new Class<?>[] {settingsType}, settings);
        Object config = callOn(envType, env, "getConfig", new Class<?>[0]);
        Class<?>[] twoStrings = {String.class, String.class};
        Class<?>[] oneString = {String.class};
        callOn(configType, config, "set", twoStrings, "pipeline.name", name);
        List<Object[]> inserts = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            int n = i - 1;
            String[] parts = args[i].split(":", -1);
            try {
                switch (parts[0]) {
                    case "set":
                        callOn(configType, config, "set", twoStrings, decode(parts[1]), decode(parts[2]));
                        break;
                    case "sql":
                        callOn(envType, env, "executeSql", oneString, decode(parts[1]));
                        break;
                    case "insert":
                        inserts.add(new Object[] {n, decode(parts[1])});
                        break;
                    default:
                        throw new IllegalArgumentException("unknown statement kind " + parts[0]);
                }
            } catch (Exception e) {
                throw refused(n, e);
            }
        }
        Object set = callOn(envType, env, "createStatementSet", new Class<?>[0]);
        for (Object[] insert : inserts) {
            try {
                callOn(setType, set, "addInsertSql", oneString, insert[1]);
            } catch (Exception e) {
                throw refused((Integer) insert[0], e);
            }
        }
        callOn(setType, set, "execute", new Class<?>[0]);
    }
}
