package example;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

/**
 * A small stateful streaming job: generated numbers, keyed by {@code n % 4}, counted per key in
 * keyed state, discarded. Arguments:
 *
 * <ul>
 *   <li>{@code --rate N}: records per second (default 20);
 *   <li>{@code --tag T}: a label printed at start (change it to make a new version);
 *   <li>{@code --mode fail --failAfter N}: throw after N records of this attempt;
 *   <li>{@code --stallAfter N}: after N records of this attempt, each checkpoint of the counter
 *       takes 3 s (longer than a short {@code execution.checkpointing.timeout}, so checkpoints stop
 *       completing while the job keeps running);
 *   <li>{@code --keys K}: how many keys (default 4);
 *   <li>{@code --payload B}: with each key's count, keep B bytes per key in keyed state (default
 *       0), so K keys hold about K × B bytes of state (100,000 keys of 1,024 bytes: ~100 MB).
 * </ul>
 *
 * <p>At start each counter prints whether it was restored from a checkpoint or savepoint
 * ({@code restored=true}) to the TaskManager's stdout; over REST, {@code GET
 * /jobs/ID/checkpoints} shows it as {@code latest.restored}.
 */
public class Counter {
    public static void main(String[] args) throws Exception {
        long rate = 20;
        long failAfter = -1;
        long stallAfter = -1;
        String mode = "run";
        String tag = "";
        long keys = 4;
        int payload = 0;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--rate": rate = Long.parseLong(args[i + 1]); break;
                case "--failAfter": failAfter = Long.parseLong(args[i + 1]); break;
                case "--stallAfter": stallAfter = Long.parseLong(args[i + 1]); break;
                case "--mode": mode = args[i + 1]; break;
                case "--tag": tag = args[i + 1]; break;
                case "--keys": keys = Long.parseLong(args[i + 1]); break;
                case "--payload": payload = Integer.parseInt(args[i + 1]); break;
                default: throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (!mode.equals("run") && !mode.equals("fail")) {
            throw new IllegalArgumentException("--mode must be run or fail, not " + mode);
        }
        final long limit = mode.equals("fail") ? Math.max(failAfter, 0) : -1;
        final long keyCount = Math.max(keys, 1);

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        DataGeneratorSource<Long> source =
                new DataGeneratorSource<>(
                        n -> n, Long.MAX_VALUE, RateLimiterStrategy.perSecond(rate), Types.LONG);
        env.fromSource(source, WatermarkStrategy.noWatermarks(), "numbers")
                .keyBy(n -> n % keyCount)
                .map(new CountPerKey(limit, stallAfter, tag, payload))
                .name("count")
                .uid("count")
                .sinkTo(new DiscardingSink<>());
        env.execute("flink-counter" + (tag.isEmpty() ? "" : " " + tag));
    }

    /**
     * Counts records per key; throws after {@code limit} records of this attempt when >= 0; its
     * checkpoints take 3 s after {@code stallAfter} records of this attempt when >= 0.
     */
    static class CountPerKey extends RichMapFunction<Long, Long> implements CheckpointedFunction {
        private final long limit;
        private final long stallAfter;
        private final String tag;
        private final int payload;
        private transient ValueState<Long> count;
        private transient ValueState<byte[]> bytes;
        private transient long seen;

        CountPerKey(long limit, long stallAfter, String tag, int payload) {
            this.limit = limit;
            this.stallAfter = stallAfter;
            this.tag = tag;
            this.payload = payload;
        }

        @Override
        public void initializeState(FunctionInitializationContext ctx) {
            count = ctx.getKeyedStateStore().getState(new ValueStateDescriptor<>("count", Types.LONG));
            if (payload > 0) {
                bytes = ctx.getKeyedStateStore().getState(
                        new ValueStateDescriptor<>("payload", byte[].class));
            }
            System.out.println("flink-counter tag=" + tag + " restored=" + ctx.isRestored());
        }

        @Override
        public void snapshotState(FunctionSnapshotContext ctx) throws Exception {
            if (stallAfter >= 0 && seen > stallAfter) {
                Thread.sleep(3000);
            }
        }

        @Override
        public Long map(Long n) throws Exception {
            seen++;
            if (limit >= 0 && seen > limit) {
                throw new IllegalStateException(
                        "failing on purpose after " + limit + " records (--mode fail)");
            }
            long c = count.value() == null ? 1 : count.value() + 1;
            count.update(c);
            if (payload > 0 && bytes.value() == null) {
                byte[] b = new byte[payload];
                java.util.Arrays.fill(b, (byte) (n & 0x7f));
                bytes.update(b);
            }
            return c;
        }
    }
}
