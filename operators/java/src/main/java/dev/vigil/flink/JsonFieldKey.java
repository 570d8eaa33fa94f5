package dev.vigil.flink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The Kafka record key of a JSON record: the UTF-8 text of one top-level string field.
 *
 * <p>The alert sink keys every alert by its {@code fingerprint}, so that all revisions of one alert
 * go to one partition, in order, and a compacted or keyed consumer sees them as one entity. A record
 * without the field (or not JSON) gets no key: the producer then spreads it as before, and nothing
 * is dropped.
 */
public class JsonFieldKey implements SerializationSchema<String> {
    private static final long serialVersionUID = 1L;
    private final String field;
    private transient ObjectMapper mapper;

    public JsonFieldKey(String field) {
        this.field = field;
    }

    @Override
    public byte[] serialize(String json) {
        if (mapper == null) {
            mapper = new ObjectMapper();
        }
        try {
            JsonNode v = mapper.readTree(json).get(field);
            return v != null && v.isTextual() ? v.asText().getBytes(StandardCharsets.UTF_8) : null;
        } catch (Exception e) {
            return null;
        }
    }
}
