package dev.vigil.flink;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.StreamReadConstraints;
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
 * record, kind 1 an alert-feedback verdict, kind 2 a deployment or maintenance event (its {@code
 * service} field names the service, as in a native record). The shard is a hash of the record's service, read with
 * the same shape rules as {@code udfs.parse} (native {@code service}; Telegraf tags and Prometheus
 * labels: the first of the service tags; an OTLP resource: {@code service.name}, else the first of
 * the service tags among its attributes; feedback: the service part of {@code series}); a record
 * whose service cannot be read (it will be a dead letter) is sharded by the hash of its bytes. A
 * record of several parts (a Telegraf batch, an OTLP export) whose services fall into several
 * shards is split into one record of the same shape per shard, so that a service's state lives in
 * one shard whatever records it arrives in. Output rows: {@code (key INT, (kinds INT[], payloads BYTES[], partitions
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

    /** Longer number literals make a record unreadable on both sides (udfs.parse.MAX_NUMBER_CHARS). */
    static final int MAX_NUMBER_CHARS = 1000;

    private final int shards;
    private final int maxBatch;
    private final long maxDelayMs;
    private final String[] serviceTags;
    private final int maxBytes;
    private final int maxDepth;

    private transient ObjectMapper json;
    private transient Integer[] keys;
    private transient List<Integer>[] kinds;
    private transient List<byte[]>[] payloads;
    private transient List<Integer>[] partitions;
    private transient List<Long>[] offsets;
    private transient long timerAt;

    /**
     * @param serviceTags the tags that may name a record's service, comma-separated, first match
     *     wins (validation.service_tags)
     * @param maxBytes, maxDepth the size and nesting bounds of validation (a record beyond them is
     *     refused whole, so never split)
     */
    public ShardBatcher(int shards, int maxBatch, long maxDelayMs, String serviceTags, int maxBytes, int maxDepth) {
        if (shards < 1 || maxBatch < 1 || maxDelayMs < 1 || maxBytes < 1 || maxDepth < 1) {
            throw new IllegalArgumentException("shards, maxBatch, maxDelayMs, maxBytes and maxDepth must be positive");
        }
        this.shards = shards;
        this.maxBatch = maxBatch;
        this.maxDelayMs = maxDelayMs;
        this.serviceTags = serviceTags.split(",");
        this.maxBytes = maxBytes;
        this.maxDepth = maxDepth;
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
        json = new ObjectMapper(JsonFactory.builder().streamReadConstraints(
                StreamReadConstraints.builder().maxNumberLength(MAX_NUMBER_CHARS).build()).build());
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
        int partition = p == null ? -1 : ((Number) p).intValue();
        long offset = o == null ? -1L : ((Number) o).longValue();
        if (kind == 1) {
            add(feedbackShard(payload), kind, payload, partition, offset);
            return;
        }
        JsonNode obj = readOrNull(payload);
        String field = obj == null ? null : containerField(obj);
        if (field == null) {
            add(shard(obj == null ? null : partService(obj, false), payload), kind, payload, partition, offset);
            return;
        }
        // a record of several parts: the shard of each part's service (-1 where a part names none)
        int[] of = partShards(obj.get(field), field.equals("resourceMetrics"), payload);
        int first = -1;
        boolean several = false;
        for (int s : of) {
            if (s >= 0 && first < 0) {
                first = s;
            } else if (s >= 0 && s != first) {
                several = true;
            }
        }
        if (several && splitAcrossShards(field, of, first, payload, partition, offset)) {
            return;
        }
        add(first >= 0 ? first : shard(null, payload), kind, payload, partition, offset);
    }

    private void add(int s, int kind, byte[] payload, int partition, long offset) {
        kinds[s].add(kind);
        payloads[s].add(payload);
        partitions[s].add(partition);
        offsets[s].add(offset);
        if (payloads[s].size() >= maxBatch) {
            emit(s);
        } else if (timerAt < 0) {
            timerAt = getProcessingTimeService().getCurrentProcessingTime() + maxDelayMs;
            getProcessingTimeService().registerTimer(timerAt, this);
        }
    }

    /** The shard of a verdict: of the service part of its series key, or of its bytes when it has none. */
    private int feedbackShard(byte[] payload) {
        String service;
        try {
            JsonNode obj = json.readTree(payload);
            String series = obj == null ? null : text(obj.get("series"));
            service = series == null ? null : keyService(series);
        } catch (Exception | StackOverflowError e) {
            service = null;
        }
        return shard(service, payload);
    }

    /** The shard of a service, or of the record's bytes when no service can be read. */
    private int shard(String service, byte[] payload) {
        int h = service != null ? service.hashCode() : Arrays.hashCode(payload);
        return Math.floorMod(h, shards);
    }

    private JsonNode readOrNull(byte[] payload) {
        try {
            JsonNode obj = json.readTree(payload);
            return obj != null && obj.isObject() ? obj : null;
        } catch (Exception | StackOverflowError e) {
            return null; // not JSON, too deep, ...: a dead letter, sharded by its bytes
        }
    }

    /** The array field that holds the parts of a record of several (as udfs.parse tells them), or null. */
    private static String containerField(JsonNode obj) {
        if (obj.has("resourceMetrics")) {
            return "resourceMetrics";
        }
        if (obj.has("metrics") && !obj.has("name")) {
            return "metrics";
        }
        return null;
    }

    /** The shard of each part's service, -1 where a part names none (no parts: not an array). */
    private int[] partShards(JsonNode parts, boolean otlp, byte[] payload) {
        if (parts == null || !parts.isArray()) {
            return new int[0];
        }
        int[] of = new int[parts.size()];
        for (int i = 0; i < of.length; i++) {
            String service = partService(parts.get(i), otlp);
            of[i] = service == null ? -1 : shard(service, payload);
        }
        return of;
    }

    /** The service of one record or part, with the rules of udfs.parse (null when it names none). */
    private String partService(JsonNode obj, boolean otlpResource) {
        if (obj == null || !obj.isObject()) {
            return null;
        }
        if (otlpResource) {
            return otlpService(obj.path("resource").path("attributes"));
        }
        if (obj.has("fields") && obj.has("name")) {
            return firstTag(obj.path("tags"));
        }
        if (obj.has("labels")) {
            return firstTag(obj.path("labels"));
        }
        return text(obj.get("service"));
    }

    private String firstTag(JsonNode tags) {
        if (!tags.isObject()) {
            return null;
        }
        for (String name : serviceTags) {
            String v = scalar(tags.get(name));
            if (v != null && !v.isEmpty()) {
                return v;
            }
        }
        return null;
    }

    /** An OTLP resource's service: its service.name, else the first of the service tags among its attributes. */
    private String otlpService(JsonNode attributes) {
        if (!attributes.isArray()) {
            return null;
        }
        String named = null;
        java.util.Map<String, String> values = new java.util.HashMap<>();
        for (JsonNode kv : attributes) {
            String key = text(kv.get("key"));
            JsonNode value = kv.get("value");
            if (key == null || value == null || !value.isObject() || value.size() != 1) {
                continue;
            }
            JsonNode v = value.elements().next();
            if (key.equals("service.name")) {
                named = value.has("stringValue") ? text(v) : null; // the last one wins, as in a JSON object
            } else {
                values.put(key, scalar(v));
            }
        }
        if (named != null && !named.isEmpty()) {
            return named;
        }
        for (String name : serviceTags) {
            String v = values.get(name);
            if (v != null && !v.isEmpty()) {
                return v;
            }
        }
        return null;
    }

    /**
     * Splits a record of several parts whose services fall into more than one shard ({@code of}: the
     * shard of each part, -1 where a part names none): each of those shards gets a record of the same
     * shape holding its parts, in their order, as the original bytes of each part (so that the Python
     * side decodes exactly the values it would have decoded from the whole). A part that names no
     * service travels with the first part that does. Returns false, and splits nothing, when
     * udfs.parse would refuse the whole record (then it is sharded whole, like any refused record).
     */
    private boolean splitAcrossShards(String field, int[] of, int first, byte[] payload, int partition, long offset) {
        List<int[]> spans = partSpans(payload, field);
        if (spans == null || spans.size() != of.length) {
            return false;
        }
        byte[] head = ("{\"" + field + "\":[").getBytes(StandardCharsets.UTF_8);
        java.util.LinkedHashMap<Integer, java.io.ByteArrayOutputStream> out = new java.util.LinkedHashMap<>();
        for (int i = 0; i < of.length; i++) {
            int s = of[i] >= 0 ? of[i] : first;
            java.io.ByteArrayOutputStream b = out.get(s);
            if (b == null) {
                b = new java.io.ByteArrayOutputStream();
                b.write(head, 0, head.length);
                out.put(s, b);
            } else {
                b.write(',');
            }
            int[] span = spans.get(i);
            b.write(payload, span[0], span[1] - span[0]);
        }
        for (java.util.Map.Entry<Integer, java.io.ByteArrayOutputStream> e : out.entrySet()) {
            e.getValue().write(']');
            e.getValue().write('}');
            add(e.getKey(), 0, e.getValue().toByteArray(), partition, offset);
        }
        return true;
    }

    /**
     * The byte spans of the elements of the array in the record's last root field {@code field}, or
     * null when the record is one that udfs.parse refuses whole: larger than maxBytes, not strict
     * UTF-8, with a byte-order mark, nested deeper than maxDepth, a number longer than
     * MAX_NUMBER_CHARS, or anything after the root object.
     */
    List<int[]> partSpans(byte[] payload, String field) {
        if (payload.length > maxBytes || (payload.length >= 3 && (payload[0] & 0xff) == 0xef
                && (payload[1] & 0xff) == 0xbb && (payload[2] & 0xff) == 0xbf)) {
            return null;
        }
        try {
            StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(payload));
        } catch (CharacterCodingException e) {
            return null;
        }
        try (JsonParser p = json.getFactory().createParser(payload)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            int depth = 1;
            String rootField = null;
            boolean inTarget = false;
            int start = -1;
            List<int[]> found = null;
            List<int[]> current = null;
            while (depth > 0) {
                JsonToken t = p.nextToken();
                if (t == null) {
                    return null;
                }
                if (depth == 1 && t == JsonToken.FIELD_NAME) {
                    rootField = p.getCurrentName();
                    continue;
                }
                if (depth == 1 && t != JsonToken.END_OBJECT) {
                    inTarget = field.equals(rootField) && t == JsonToken.START_ARRAY;
                    if (inTarget) {
                        current = new ArrayList<>();
                    }
                } else if (depth == 2 && inTarget && start < 0 && t != JsonToken.END_ARRAY) {
                    start = (int) p.getTokenLocation().getByteOffset();
                }
                if (t == JsonToken.START_OBJECT || t == JsonToken.START_ARRAY) {
                    if (++depth > maxDepth) {
                        return null;
                    }
                } else if (t == JsonToken.END_OBJECT || t == JsonToken.END_ARRAY) {
                    depth--;
                    if (inTarget && depth == 1) {
                        found = current; // the last occurrence of a repeated key wins, as in Python
                        inTarget = false;
                    }
                } else {
                    p.finishToken();
                }
                if (inTarget && depth == 2 && start >= 0) {
                    current.add(new int[] {start, (int) p.getCurrentLocation().getByteOffset()});
                    start = -1;
                }
            }
            return p.nextToken() == null ? found : null;
        } catch (Exception | StackOverflowError e) {
            return null;
        }
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

    /** A tag value as udfs.parse makes it: text, or a number or boolean written out. */
    private static String scalar(JsonNode n) {
        return n != null && (n.isTextual() || n.isNumber() || n.isBoolean()) ? n.asText() : null;
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
