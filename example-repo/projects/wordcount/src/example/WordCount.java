package example;

import java.util.Map;
import java.util.TreeMap;

/** A tiny service: counts words of a built-in text and prints the counts every few seconds. */
public final class WordCount {
    private static final String TEXT =
        "to be or not to be that is the question whether tis nobler in the mind to suffer";

    public static void main(String[] args) throws InterruptedException {
        long interval = 10;
        for (int i = 0; i + 1 < args.length; i++) {
            if (args[i].equals("--interval")) {
                interval = Long.parseLong(args[i + 1]);
            }
        }
        Map<String, Integer> counts = new TreeMap<>();
        for (String w : TEXT.split("\\s+")) {
            counts.merge(w, 1, Integer::sum);
        }
        while (true) {
            System.out.println("word counts: " + counts);
            System.out.flush();
            Thread.sleep(interval * 1000);
        }
    }
}
