package dev.streamscore.infra;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Runs de.bwaldvogel:mongo-java-server with its H2 file backend for local development and CI.
 *
 * <p>Usage: {@code java -cp 'libs/*:classes' dev.streamscore.infra.Launcher HOST PORT DATA_FILE}
 *
 * <p>The library reports MongoDB 3.6-5.0 (wire version 8 at most) and PyMongo 4.20 refuses
 * servers below wire version 9, so the backend declares a current version instead. What the
 * server implements does not change with that number: no {@code hello} (PyMongo falls back to
 * the legacy handshake as long as no {@code server_api} is set), no {@code explain}, no sessions
 * or transactions.
 *
 * <p>1. Data live in one H2 MVStore file, written in the background about once a second.
 * 2. On SIGTERM the shutdown hook stops listening, closes the backend and with it the store,
 * so every acknowledged write is on disk before the process exits.
 */
public final class Launcher {
    /** The MongoDB version announced to clients: 7.0, wire version 21. */
    private static final MongoVersion DECLARED = new MongoVersion() {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(7, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return 21;
        }
    };

    private Launcher() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: Launcher HOST PORT DATA_FILE");
            System.exit(2);
        }
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        Path dataFile = Path.of(args[2]).toAbsolutePath();
        Files.createDirectories(dataFile.getParent());

        H2Backend backend = new H2Backend(dataFile.toString());
        backend.version(DECLARED);
        MongoServer server = new MongoServer(backend);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.shutdown();
            backend.close();
            System.out.println("mongo-java-server stopped; data in " + dataFile);
        }, "shutdown"));
        server.bind(host, port);
        System.out.println("mongo-java-server listening on " + host + ":" + port
                + " (H2 file " + dataFile + ", wire version " + DECLARED.getWireVersion() + ")");
    }
}
