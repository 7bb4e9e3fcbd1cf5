// Verify a hookd `standard` webhook (Standard Webhooks) with the JDK alone (Java 11+).
//
//     javac VerifyStandard.java && WEBHOOK_SECRET=whsec_... java VerifyStandard request.http
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
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class VerifyStandard {
    static final Duration TOLERANCE = Duration.ofMinutes(5);

    /**
     * Whether {@code body} (the raw bytes received) was signed with {@code secret}
     * ({@code whsec_<base64 key>}) at a time within 5 minutes of now.
     * {@code headers} maps lower-case header names to values.
     */
    static boolean verify(String secret, Map<String, String> headers, byte[] body)
            throws GeneralSecurityException {
        byte[] key = Base64.getDecoder().decode(secret.replaceFirst("^whsec_", ""));
        String id = headers.get("webhook-id");
        String timestamp = headers.get("webhook-timestamp");
        String signatures = headers.get("webhook-signature");
        if (id == null || timestamp == null || signatures == null) {
            return false;
        }
        long seconds;
        try {
            seconds = Long.parseLong(timestamp.trim());
        } catch (NumberFormatException e) {
            return false;
        }
        Duration age = Duration.between(Instant.ofEpochSecond(seconds), Instant.now());
        if (age.abs().compareTo(TOLERANCE) > 0) {
            return false;
        }
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        mac.update((id + "." + timestamp.trim() + ".").getBytes(StandardCharsets.UTF_8));
        byte[] expected = mac.doFinal(body);
        // Several space-separated "v1,<base64>" entries may be sent (during a key rotation).
        for (String entry : signatures.trim().split("\\s+")) {
            String[] parts = entry.split(",", 2);
            if (parts.length != 2 || !parts[0].equals("v1")) {
                continue;
            }
            try {
                if (MessageDigest.isEqual(Base64.getDecoder().decode(parts[1]), expected)) {
                    return true;
                }
            } catch (IllegalArgumentException notBase64) {
                // not this one
            }
        }
        return false;
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
