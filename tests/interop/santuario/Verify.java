// Verifies the first ds:Signature of a hub-signed document with Apache Santuario, secure validation on, with the
// certificate it carries (trusting that certificate is the caller's business: it must chain to the hub root).
// Usage: java -cp xmlsec.jar:commons-codec.jar:slf4j-api.jar Verify.java FILE.xml   → "true SUBJECT" or "false …"
import java.io.File;
import java.security.cert.X509Certificate;
import javax.xml.parsers.DocumentBuilderFactory;
import org.apache.xml.security.signature.XMLSignature;
import org.w3c.dom.Document;
import org.w3c.dom.Element;

public class Verify {
  public static void main(String[] a) throws Exception {
    org.apache.xml.security.Init.init();
    DocumentBuilderFactory f = DocumentBuilderFactory.newInstance();
    f.setNamespaceAware(true);
    f.setFeature("http://apache.org/xml/features/disallow-doctype-decl", true);
    Document doc = f.newDocumentBuilder().parse(new File(a[0]));
    Element el = (Element) doc.getElementsByTagNameNS("http://www.w3.org/2000/09/xmldsig#", "Signature").item(0);
    XMLSignature sig = new XMLSignature(el, "", true); // secure validation on
    X509Certificate cert = sig.getKeyInfo().getX509Certificate();
    System.out.println(sig.checkSignatureValue(cert) + " " + cert.getSubjectX500Principal());
  }
}
