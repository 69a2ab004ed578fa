// Signs a hub envelope with Apache Santuario exactly as docs/gateway.md describes (the hub's signature profile,
// hub/trust/profile.py). Usage: java -cp xmlsec.jar:commons-codec.jar:slf4j-api.jar Sign.java KEY.pem CHAIN.pem
// IN.xml OUT.xml SIGNATURE-METHOD-URI [key-value]   (PKCS#8 PEM key, unencrypted; CHAIN = leaf then issuing CA;
// "key-value" adds a ds:KeyValue, which the hub must refuse).
import java.io.File;
import java.io.FileInputStream;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import javax.xml.parsers.DocumentBuilderFactory;
import javax.xml.transform.OutputKeys;
import javax.xml.transform.Transformer;
import javax.xml.transform.TransformerFactory;
import javax.xml.transform.dom.DOMSource;
import javax.xml.transform.stream.StreamResult;
import org.apache.xml.security.algorithms.MessageDigestAlgorithm;
import org.apache.xml.security.c14n.Canonicalizer;
import org.apache.xml.security.keys.content.X509Data;
import org.apache.xml.security.signature.XMLSignature;
import org.apache.xml.security.transforms.Transforms;
import org.w3c.dom.Document;
import org.w3c.dom.Element;

public class Sign {
  public static void main(String[] a) throws Exception {
    System.setProperty("org.apache.xml.security.ignoreLineBreaks", "true"); // before Init.init()
    org.apache.xml.security.Init.init();
    String method = a[4];
    String pem = Files.readString(Path.of(a[0])).replaceAll("-----[A-Z ]+-----", "").replaceAll("\\s", "");
    PrivateKey key = KeyFactory.getInstance(method.contains("rsa") ? "RSA" : "EC")
        .generatePrivate(new PKCS8EncodedKeySpec(Base64.getDecoder().decode(pem)));
    List<X509Certificate> chain = new ArrayList<>();
    try (InputStream s = new FileInputStream(a[1])) {
      for (java.security.cert.Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(s)) {
        chain.add((X509Certificate) c);
      }
    }
    DocumentBuilderFactory f = DocumentBuilderFactory.newInstance();
    f.setNamespaceAware(true);
    f.setFeature("http://apache.org/xml/features/disallow-doctype-decl", true);
    Document doc = f.newDocumentBuilder().parse(new File(a[2]));
    Element envelope = doc.getDocumentElement(); // env:Envelope

    XMLSignature sig = new XMLSignature(doc, "", method, Canonicalizer.ALGO_ID_C14N_EXCL_OMIT_COMMENTS);
    envelope.appendChild(sig.getElement()); // the last child of the envelope root
    Transforms transforms = new Transforms(doc);
    transforms.addTransform(Transforms.TRANSFORM_ENVELOPED_SIGNATURE);
    transforms.addTransform(Transforms.TRANSFORM_C14N_EXCL_OMIT_COMMENTS);
    sig.addDocument("", transforms, MessageDigestAlgorithm.ALGO_ID_DIGEST_SHA256);
    if (a.length > 5 && a[5].equals("key-value")) {
      sig.addKeyInfo(chain.get(0).getPublicKey()); // a ds:KeyValue: refused by the hub (SIG_PROFILE)
    }
    X509Data x509 = new X509Data(doc);
    x509.addCertificate(chain.get(0)); // the system's certificate
    x509.addCertificate(chain.get(1)); // its issuing CA
    sig.getKeyInfo().add(x509);
    sig.sign(key);

    Transformer t = TransformerFactory.newInstance().newTransformer(); // no indentation after signing
    t.setOutputProperty(OutputKeys.ENCODING, "UTF-8");
    t.transform(new DOMSource(doc), new StreamResult(new File(a[3])));
  }
}
