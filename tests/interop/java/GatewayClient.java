// A Java system's side of the HTTPS gateway, with nothing but the JDK (java.net.http.HttpClient) and the TLS settings
// docs/gateway.md gives ("Java 端" / "The Java side": -Djavax.net.ssl.keyStore=… -Djavax.net.ssl.trustStore=… as
// system properties; the default SSLContext takes them, host name verification stays on).
//
// Usage: java -D… GatewayClient.java BASE-URL SIGNED.xml OUT-DIR
//   1. POST BASE-URL/v1/messages with SIGNED.xml (application/xml) → OUT-DIR/receipt.xml
//   2. GET  BASE-URL/v1/inbox?wait=30                               → OUT-DIR/delivery.xml
//   3. POST BASE-URL/v1/inbox/{tag}/ack, twice (the second must find the tag settled)
// Prints one line a step: "submit STATUS MESSAGE-ID OUTCOME", "poll STATUS MESSAGE-ID", "ack STATUS", "ack STATUS".
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

public class GatewayClient {
  public static void main(String[] a) throws Exception {
    String base = a[0];
    Path out = Path.of(a[2]);
    HttpClient client = HttpClient.newBuilder() // one keep-alive connection for every request
        .version(HttpClient.Version.HTTP_1_1)
        .connectTimeout(Duration.ofSeconds(10))
        .build();

    HttpResponse<byte[]> submitted = client.send(
        HttpRequest.newBuilder(URI.create(base + "/v1/messages"))
            .header("Content-Type", "application/xml")
            .timeout(Duration.ofSeconds(60))
            .POST(HttpRequest.BodyPublishers.ofFile(Path.of(a[1])))
            .build(),
        HttpResponse.BodyHandlers.ofByteArray());
    Files.write(out.resolve("receipt.xml"), submitted.body());
    System.out.println("submit " + submitted.statusCode() + " "
        + submitted.headers().firstValue("X-Hub-Message-Id").orElse("-") + " "
        + submitted.headers().firstValue("X-Hub-Outcome").orElse("-"));

    HttpResponse<byte[]> polled = client.send(
        HttpRequest.newBuilder(URI.create(base + "/v1/inbox?wait=30")).timeout(Duration.ofSeconds(60)).GET().build(),
        HttpResponse.BodyHandlers.ofByteArray());
    Files.write(out.resolve("delivery.xml"), polled.body());
    System.out.println("poll " + polled.statusCode() + " "
        + polled.headers().firstValue("X-Hub-Message-Id").orElse("-"));
    String tag = polled.headers().firstValue("X-Hub-Delivery-Tag").orElse("none");

    for (int i = 0; i < 2; i++) {
      HttpResponse<Void> acked = client.send(
          HttpRequest.newBuilder(URI.create(base + "/v1/inbox/" + tag + "/ack"))
              .timeout(Duration.ofSeconds(30))
              .POST(HttpRequest.BodyPublishers.noBody())
              .build(),
          HttpResponse.BodyHandlers.discarding());
      System.out.println("ack " + acked.statusCode());
    }
  }
}
