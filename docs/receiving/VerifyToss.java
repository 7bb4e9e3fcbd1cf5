// Verify a hookd `toss` webhook with the JDK alone (Java 17+).
//
//     javac VerifyToss.java && WEBHOOK_SECRET=... java VerifyToss request.http
//
// request.http is a captured request: "name: value" header lines, a blank line, then the
// body exactly as received (the JDK has no JSON parser to read hookd listen's --json).
// Exits 0 if the signature is valid, 1 if not.

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.Map;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class VerifyToss {
    static final Duration TOLERANCE = Duration.ofMinutes(5);

    /**
     * Whether {@code body} (the raw bytes received) was signed with {@code secret} (its UTF-8
     * bytes are the key) at a time within 5 minutes of now.
     * {@code headers} maps lower-case header names to values.
     */
    static boolean verify(String secret, Map<String, String> headers, byte[] body)
            throws GeneralSecurityException {
        String time = headers.get("tosspayments-webhook-transmission-time");
        String signature = headers.get("tosspayments-webhook-signature");
        if (time == null || signature == null) {
            return false;
        }
        // Optional, and recommended: refuse replays of old requests.
        try {
            Instant sent = OffsetDateTime.parse(time).toInstant();
            if (Duration.between(sent, Instant.now()).abs().compareTo(TOLERANCE) > 0) {
                return false;
            }
        } catch (DateTimeParseException e) {
            return false;
        }
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        mac.update(body);
        byte[] expected = mac.doFinal((":" + time).getBytes(StandardCharsets.UTF_8));
        byte[] given;
        try {
            given = HexFormat.of().parseHex(signature.trim());
        } catch (IllegalArgumentException notHex) {
            return false;
        }
        return MessageDigest.isEqual(given, expected);
    }

    public static void main(String[] args) throws Exception {
        String secret = System.getenv("WEBHOOK_SECRET");
        if (secret == null || secret.isEmpty()) {
            System.err.println("set WEBHOOK_SECRET to the endpoint's secret");
            System.exit(2);
        }
        byte[] raw = args.length > 0 ? Files.readAllBytes(Path.of(args[0])) : System.in.readAllBytes();
        Map<String, String> headers = new HashMap<>();
        byte[] body = splitRequest(raw, headers);
        if (!verify(secret, headers, body)) {
            System.err.println("invalid: no matching signature, or the time is too far from now");
            System.exit(1);
        }
        System.out.println("valid: " + headers.get("webhook-id") + ": "
                + new String(body, StandardCharsets.UTF_8));
    }

    /** Reads "name: value" lines up to the first blank line into headers; returns the rest. */
    static byte[] splitRequest(byte[] raw, Map<String, String> headers) throws IOException {
        int i = 0;
        while (true) {
            int end = i;
            while (end < raw.length && raw[end] != '\n') {
                end++;
            }
            if (end >= raw.length) {
                throw new IOException("no blank line between the headers and the body");
            }
            String line = new String(raw, i, end - i, StandardCharsets.UTF_8).strip();
            i = end + 1;
            if (line.isEmpty()) {
                break;
            }
            int colon = line.indexOf(':');
            if (colon > 0) {
                headers.put(line.substring(0, colon).strip().toLowerCase(), line.substring(colon + 1).strip());
            }
        }
        byte[] body = new byte[raw.length - i];
        System.arraycopy(raw, i, body, 0, body.length);
        return body;
    }
}
