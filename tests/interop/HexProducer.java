// A producer the project did not write: the Apache Kafka Java client, driven from the tests.
// Usage: java -cp '<kafka libs>/*' HexProducer.java BOOTSTRAP TOPIC COMPRESSION < records
// One record per stdin line, tab-separated: partition, key, value, headers.
// key and value are hex, or "-" for null; headers are name=hex or name=- (null value),
// comma-separated, or "-" for none. Every record is sent with acks=all and flushed.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class HexProducer {
    static byte[] hex(String text) {
        if (text.equals("-")) return null;
        byte[] out = new byte[text.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(text.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("compression.type", args[2]);
        props.put("acks", "all");
        props.put("max.request.size", "4194304");
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props);
             BufferedReader in = new BufferedReader(
                 new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isEmpty()) continue;
                String[] f = line.split("\t", -1);
                ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(
                    args[1], Integer.parseInt(f[0]), hex(f[1]), hex(f[2]));
                if (!f[3].equals("-")) {
                    for (String header : f[3].split(",")) {
                        String[] kv = header.split("=", 2);
                        record.headers().add(new RecordHeader(kv[0], hex(kv[1])));
                    }
                }
                sent.add(producer.send(record));
            }
            producer.flush();
            for (Future<RecordMetadata> f : sent) f.get();
        }
        System.out.println("sent " + sent.size());
    }
}
