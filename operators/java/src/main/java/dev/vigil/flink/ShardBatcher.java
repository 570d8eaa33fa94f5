package dev.vigil.flink;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Groups raw Kafka records into batches per shard, in the JVM, so that the Python scoring operator
 * is called once per batch instead of once per record.
 *
 * <p>Input rows: {@code (kind INT, payload BYTES, partition INT, offset BIGINT)}; kind 0 is a metric
 * record, kind 1 an alert-feedback verdict. The shard is a hash of the record's service, read with
 * the same shape rules as {@code udfs.parse} (native {@code service}, Telegraf {@code tags.service},
 * Prometheus {@code labels.service} or {@code labels.job}, feedback: the service part of
 * {@code series}); a record whose service cannot be read (it will be a dead letter) is sharded by
 * the hash of its bytes. Output rows: {@code (key INT, (kinds INT[], payloads BYTES[], partitions
 * INT[], offsets BIGINT[]))}, the layout PyFlink's keyed operators expect after a key-by; the key of
 * shard {@code s} is the smallest integer whose key group is {@code s}, so that with as many key
 * groups (max parallelism) as shards every shard is a key group of its own and rescaling moves
 * whole shards.
 *
 * <p>A shard's batch is emitted when it holds {@code maxBatch} records, when its oldest record has
 * waited {@code maxDelayMs} of processing time, before every checkpoint barrier (so nothing is
 * buffered across a checkpoint: this operator has no state) and at the end of bounded input.
 * Order within a shard is arrival order.
 */
public class ShardBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput, ProcessingTimeCallback {

    private static final long serialVersionUID = 1L;

    private final int shards;
    private final int maxBatch;
    private final long maxDelayMs;

    private transient ObjectMapper json;
    private transient Integer[] keys;
    private transient List<Integer>[] kinds;
    private transient List<byte[]>[] payloads;
    private transient List<Integer>[] partitions;
    private transient List<Long>[] offsets;
    private transient long timerAt;

    public ShardBatcher(int shards, int maxBatch, long maxDelayMs) {
        if (shards < 1 || maxBatch < 1 || maxDelayMs < 1) {
            throw new IllegalArgumentException("shards, maxBatch and maxDelayMs must be positive");
        }
        this.shards = shards;
        this.maxBatch = maxBatch;
        this.maxDelayMs = maxDelayMs;
    }

    /** The key whose key group is {@code shard} when there are {@code shards} key groups. */
    public static int keyOf(int shard, int shards) {
        for (int k = 0; ; k++) {
            Row r = new Row(1);
            r.setField(0, k);
            if (KeyGroupRangeAssignment.assignToKeyGroup(r, shards) == shard) {
                return k;
            }
        }
    }

    @Override
    @SuppressWarnings("unchecked")
    public void open() throws Exception {
        super.open();
        json = new ObjectMapper();
        keys = new Integer[shards];
        kinds = new List[shards];
        payloads = new List[shards];
        partitions = new List[shards];
        offsets = new List[shards];
        for (int s = 0; s < shards; s++) {
            keys[s] = keyOf(s, shards);
            kinds[s] = new ArrayList<>();
            payloads[s] = new ArrayList<>();
            partitions[s] = new ArrayList<>();
            offsets[s] = new ArrayList<>();
        }
        timerAt = -1;
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        Object k = row.getField(0);
        int kind = k == null ? 0 : ((Number) k).intValue();
        byte[] payload = (byte[]) row.getField(1);
        if (payload == null) {
            payload = new byte[0];
        }
        Object p = row.getField(2);
        Object o = row.getField(3);
        int s = shardOf(kind, payload);
        kinds[s].add(kind);
        payloads[s].add(payload);
        partitions[s].add(p == null ? -1 : ((Number) p).intValue());
        offsets[s].add(o == null ? -1L : ((Number) o).longValue());
        if (payloads[s].size() >= maxBatch) {
            emit(s);
        } else if (timerAt < 0) {
            timerAt = getProcessingTimeService().getCurrentProcessingTime() + maxDelayMs;
            getProcessingTimeService().registerTimer(timerAt, this);
        }
    }

    /** The shard of one record: a hash of its service, or of its bytes when no service can be read. */
    int shardOf(int kind, byte[] payload) {
        String service = null;
        try {
            service = kind == 1 ? feedbackService(payload) : metricService(payload);
        } catch (Exception | StackOverflowError e) {
            service = null; // not JSON, too deep, ...: a dead letter, sharded by its bytes
        }
        int h = service != null ? service.hashCode() : Arrays.hashCode(payload);
        return Math.floorMod(h, shards);
    }

    private String metricService(byte[] payload) throws Exception {
        JsonNode obj = json.readTree(payload);
        if (obj == null || !obj.isObject()) {
            return null;
        }
        if (obj.has("fields") && obj.has("name")) {
            return text(obj.path("tags").get("service"));
        }
        if (obj.has("labels")) {
            String s = text(obj.path("labels").get("service"));
            return s != null && !s.isEmpty() ? s : text(obj.path("labels").get("job"));
        }
        return text(obj.get("service"));
    }

    private String feedbackService(byte[] payload) throws Exception {
        JsonNode obj = json.readTree(payload);
        String series = obj == null ? null : text(obj.get("series"));
        return series == null ? null : keyService(series);
    }

    /** The service part of a series key: up to the first unescaped '|', backslash escapes undone. */
    static String keyService(String key) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < key.length(); i++) {
            char c = key.charAt(i);
            if (c == '\\' && i + 1 < key.length()) {
                out.append(key.charAt(++i));
            } else if (c == '|') {
                return out.toString();
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    private static String text(JsonNode n) {
        return n != null && n.isTextual() ? n.textValue() : null;
    }

    private void emit(int s) {
        int n = payloads[s].size();
        if (n == 0) {
            return;
        }
        int[] kd = new int[n];
        byte[][] pl = new byte[n][];
        int[] pa = new int[n];
        long[] of = new long[n];
        for (int i = 0; i < n; i++) {
            kd[i] = kinds[s].get(i);
            pl[i] = payloads[s].get(i);
            pa[i] = partitions[s].get(i);
            of[i] = offsets[s].get(i);
        }
        kinds[s].clear();
        payloads[s].clear();
        partitions[s].clear();
        offsets[s].clear();
        Row batch = new Row(4);
        batch.setField(0, kd);
        batch.setField(1, pl);
        batch.setField(2, pa);
        batch.setField(3, of);
        Row out = new Row(2);
        out.setField(0, keys[s]);
        out.setField(1, batch);
        output.collect(new StreamRecord<>(out));
    }

    private void emitAll() {
        for (int s = 0; s < shards; s++) {
            emit(s);
        }
    }

    @Override
    public void onProcessingTime(long time) {
        timerAt = -1;
        emitAll();
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        emitAll();
    }

    @Override
    public void endInput() {
        emitAll();
    }

    @Override
    public void finish() throws Exception {
        emitAll();
        super.finish();
    }
}
