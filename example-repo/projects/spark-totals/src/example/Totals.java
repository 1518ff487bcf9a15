package example;

import java.util.ArrayList;
import java.util.List;

import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.SparkSession;

/**
 * A small Spark batch job: sums the squares of 1..N in a few partitions and prints the total.
 *
 * <p>Arguments: {@code --n N} (default 1000000), {@code --sleep SECONDS} (stay alive a while
 * before ending, to watch it run), {@code --fail} (throw after the sum, to watch retries and
 * alerts).
 */
public final class Totals {
  private Totals() {}

  public static void main(String[] args) throws Exception {
    long n = 1_000_000L;
    long sleep = 0;
    boolean fail = false;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--n" -> n = Long.parseLong(args[++i]);
        case "--sleep" -> sleep = Long.parseLong(args[++i]);
        case "--fail" -> fail = true;
        default -> throw new IllegalArgumentException("unknown argument " + args[i]);
      }
    }
    SparkSession spark = SparkSession.builder().appName("totals").getOrCreate();
    try {
      JavaSparkContext sc = JavaSparkContext.fromSparkContext(spark.sparkContext());
      List<Long> numbers = new ArrayList<>();
      for (long i = 1; i <= Math.min(n, 10_000); i++) {
        numbers.add(i);
      }
      JavaRDD<Long> rdd = sc.parallelize(numbers, 4);
      long total = rdd.map(x -> x * x).reduce(Long::sum);
      System.out.println("total of squares 1.." + Math.min(n, 10_000) + " = " + total);
      if (sleep > 0) {
        Thread.sleep(sleep * 1000);
      }
      if (fail) {
        throw new IllegalStateException("failing on purpose after total " + total);
      }
    } finally {
      spark.stop();
    }
  }
}
