// The pure parts of box networks' policy side: domain patterns and address checks, the DNS codec,
// ClientHello and Host parsing, the egress CA.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <filesystem>

#include "common/error.h"
#include "common/fd.h"
#include "model/egress.h"
#include "netd/ca.h"
#include "netd/dns.h"
#include "netd/http_relay.h"
#include "netd/netd.h"

namespace upstream {
namespace {

using egress::address_blocked;
using egress::parse_ipv4;
namespace http = boost::beast::http;

TEST(Egress, DomainPatterns) {
  EXPECT_EQ(egress::parse_domain_pattern("API.Example.COM.", "d"), "api.example.com");
  EXPECT_EQ(egress::parse_domain_pattern("*.example.com", "d"), "*.example.com");
  for (const char* bad :
       {"", "*.", "*.com", "exa mple.com", "-a.com", "a..com", "1.2.3.4", "a/b.com", "*"}) {
    EXPECT_THROW(egress::parse_domain_pattern(bad, "allowed domain"), Error) << bad;
  }
  EXPECT_TRUE(egress::domain_matches("api.example.com", "api.example.com"));
  EXPECT_FALSE(egress::domain_matches("api.example.com", "x.api.example.com"));
  EXPECT_TRUE(egress::domain_matches("*.example.com", "a.example.com"));
  EXPECT_TRUE(egress::domain_matches("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(egress::domain_matches("*.example.com", "example.com"));
  EXPECT_FALSE(egress::domain_matches("*.example.com", "badexample.com"));
  EXPECT_EQ(egress::normalise_host("Api.Example.com.:443"), "api.example.com");
  EXPECT_EQ(egress::normalise_host("a.com:"), "a.com");
  // What is no host name is no host: never a name a policy could be checked against.
  EXPECT_EQ(egress::normalise_host("allowed.com:80:0"), "");
  EXPECT_EQ(egress::normalise_host("allowed.com:evil"), "");
  EXPECT_EQ(egress::normalise_host(". allowed.com"), "");
  EXPECT_EQ(egress::normalise_host("allowed.com\r"), "");
  EXPECT_EQ(egress::normalise_host("[::1]:8080"), "[::1]");
  EXPECT_EQ(egress::normalise_host("[)P/1.1"), "");
  EXPECT_EQ(egress::normalise_host("[::1]x"), "");
  for (std::string h : {"a.:1.", "A.b.:80", "x:.", "a:1:2", "[::1]:80", "..", ":"})
    EXPECT_EQ(egress::normalise_host(egress::normalise_host(h)), egress::normalise_host(h)) << h;
}

TEST(Egress, HeadersAndModes) {
  EXPECT_NO_THROW(egress::check_header("Authorization", "Bearer x"));
  EXPECT_THROW(egress::check_header("Bad Name", "x"), Error);
  EXPECT_THROW(egress::check_header("X-A", "a\r\nInjected: 1"), Error);
  EXPECT_THROW(egress::check_header("Content-Length", "1"), Error);
  Egress e;
  e.allow_domains = {"Example.com"};
  EXPECT_THROW(egress::validate(NetworkMode::allow_all, e), Error);
  egress::validate(NetworkMode::custom, e);
  EXPECT_EQ(e.allow_domains[0], "example.com");
  Egress h;
  h.headers["api.example.com"]["Authorization"] = "Bearer s";
  EXPECT_THROW(egress::validate(NetworkMode::none, h), Error);
  EXPECT_NO_THROW(egress::validate(NetworkMode::allow_all, h));
  // Shown to fronts: names only.
  EXPECT_EQ(egress::to_json(h, false)["headers"]["api.example.com"][0], "Authorization");
  EXPECT_EQ(egress::from_json(egress::to_json(h, true)), h);
  EXPECT_THROW(egress::from_json({{"allow_domains", "x"}}), Error);
  EXPECT_THROW(egress::from_json({{"allowed", {"x"}}}), Error);
}

TEST(Egress, AddressesDeniedWinsPrivateAlwaysBlocked) {
  egress::BoxPolicy p;
  p.mode = NetworkMode::custom;
  p.egress.allow_cidrs = {"198.18.0.0/16", "10.5.0.0/16"};
  p.egress.deny_cidrs = {"198.18.7.0/24"};
  std::vector<uint32_t> host = {*parse_ipv4("203.0.113.9")};
  EXPECT_FALSE(address_blocked(p, *parse_ipv4("198.18.1.1"), host, false));
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("198.18.7.1"), host, false));  // denied wins
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("198.18.7.1"), host, true));   // also for names
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("10.5.0.1"), host, false));    // private
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("169.254.169.254"), host, true));
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("10.200.0.6"), host, true));      // another box
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("203.0.113.9"), host, true));     // the host
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("93.184.216.34"), host, false));  // not allowed
  EXPECT_FALSE(address_blocked(p, *parse_ipv4("93.184.216.34"), host, true));  // an allowed name's
  p.open_private = {"10.5.0.0/16"};
  EXPECT_FALSE(address_blocked(p, *parse_ipv4("10.5.0.1"), host, false));
  p.mode = NetworkMode::allow_all;
  p.egress = {};
  EXPECT_FALSE(address_blocked(p, *parse_ipv4("93.184.216.34"), host, false));
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("192.168.1.1"), host, false));
  auto r = *address_blocked(p, *parse_ipv4("192.168.1.1"), host, false);
  EXPECT_NE(r.find("private range 192.168.0.0/16"), std::string::npos) << r;
}

TEST(Egress, ClosedRangesCoverEveryKind) {
  // What the firewall's set private4 and netd's address checks close to every box.
  egress::BoxPolicy p;
  p.mode = NetworkMode::allow_all;
  for (const char* a : {"10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "100.127.255.254",
                        "127.0.0.2", "169.254.169.254", "224.0.0.1", "239.255.255.250", "0.0.0.1",
                        "240.0.0.1", "255.255.255.255"})
    EXPECT_TRUE(address_blocked(p, *parse_ipv4(a), {}, false)) << a;
  for (const char* a : {"198.18.0.2", "8.8.8.8", "100.63.255.255", "100.128.0.1"})
    EXPECT_FALSE(address_blocked(p, *parse_ipv4(a), {}, false)) << a;
  // Opening a range that covers the boxes' own leaves the boxes' own closed.
  p.open_private = {"10.0.0.0/8"};
  EXPECT_FALSE(address_blocked(p, *parse_ipv4("10.5.0.1"), {}, false));
  EXPECT_TRUE(address_blocked(p, *parse_ipv4("10.200.0.6"), {}, false));
}

TEST(Dns, QueryAnswerAndCompressedResponse) {
  std::string q = dns::build_query(0x1234, "Api.Example.com", dns::kTypeA);
  auto parsed = dns::parse_query(q);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->id, 0x1234);
  EXPECT_EQ(parsed->name, "api.example.com");
  EXPECT_EQ(parsed->qtype, dns::kTypeA);
  std::string a = dns::answer(q, *parsed, dns::kNoError,
                              {*parse_ipv4("198.18.0.2"), *parse_ipv4("198.18.0.3")}, 60);
  auto r = dns::parse_response(a, 0x1234);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rcode, dns::kNoError);
  ASSERT_EQ(r->addrs.size(), 2u);
  EXPECT_EQ(egress::ipv4_string(r->addrs[1]), "198.18.0.3");
  EXPECT_EQ(r->ttl, 60u);
  EXPECT_FALSE(dns::parse_response(a, 0x9999));  // another query's
  EXPECT_FALSE(dns::parse_query(a));             // a response is no query
  auto nx = dns::parse_response(dns::answer(q, *parsed, dns::kNxDomain, {}, 0), 0x1234);
  ASSERT_TRUE(nx);
  EXPECT_EQ(nx->rcode, dns::kNxDomain);
  EXPECT_TRUE(nx->addrs.empty());
  // Truncated and looping messages are refused, not read past their end.
  for (size_t n = 0; n < a.size(); n++) (void)dns::parse_response(a.substr(0, n), 0x1234);
  std::string loop = q.substr(0, 12) + std::string("\xc0\x0c", 2) + std::string(4, '\0');
  EXPECT_FALSE(dns::parse_query(loop));
}

TEST(Dns, BlockedAddressesInAnySection) {
  auto rr = [](uint16_t type, const std::string& data) {
    std::string r("\xc0\x0c", 2);
    r += static_cast<char>(type >> 8);
    r += static_cast<char>(type & 0xff);
    r += std::string("\x00\x01\x00\x00\x00\x1e", 6);
    r += static_cast<char>(data.size() >> 8);
    r += static_cast<char>(data.size() & 0xff);
    return r + data;
  };
  std::string q = dns::build_query(7, "x.example", 15);
  auto message = [&](uint16_t an, uint16_t ar, const std::string& records) {
    std::string m = q;
    m[2] = static_cast<char>(0x81);
    m[3] = static_cast<char>(0x80);
    m[7] = static_cast<char>(an);
    m[11] = static_cast<char>(ar);
    return m + records;
  };
  auto blocked = [](uint32_t a) { return (a >> 24) == 10; };
  std::string mx = rr(15, std::string("\x00\x0a\xc0\x0c", 4));
  std::string pub = rr(dns::kTypeA, std::string("\xc6\x12\x00\x02", 4));
  std::string priv = rr(dns::kTypeA, std::string("\x0a\x00\x00\x01", 4));
  EXPECT_FALSE(dns::carries_blocked_address(message(1, 1, mx + pub), blocked));
  EXPECT_TRUE(dns::carries_blocked_address(message(1, 1, mx + priv), blocked));  // additional
  EXPECT_TRUE(dns::carries_blocked_address(message(1, 0, priv), blocked));
  EXPECT_TRUE(dns::carries_blocked_address(message(1, 0, rr(dns::kTypeAAAA, std::string(16, 'x'))),
                                           blocked));
  EXPECT_TRUE(dns::carries_blocked_address(message(1, 0, rr(dns::kTypeHTTPS, "xx")), blocked));
  EXPECT_TRUE(dns::carries_blocked_address(message(2, 0, mx), blocked));  // truncated: refused
  std::string whole = message(1, 1, mx + pub);
  for (size_t n = 0; n < whole.size(); n++)
    EXPECT_TRUE(dns::carries_blocked_address(whole.substr(0, n), blocked)) << n;
}

TEST(HttpRelay, TheHostARequestIsFor) {
  http::request_header<> h;
  h.target("/x");
  h.set(http::field::host, "API.Example.com:443");
  EXPECT_EQ(netd::request_host(h), "api.example.com");
  EXPECT_EQ(netd::target_host(h), "");
  h.target("https://other.example:8443/path?q");
  EXPECT_EQ(netd::request_host(h), "other.example");  // the absolute form wins over Host
  h.target("HTTP://user:pw@evil.example./");
  EXPECT_EQ(netd::target_host(h), "evil.example");
  // An absolute target that names no valid host is a request for no host, not for Host's.
  h.target("http://evil.example:80:0/");
  EXPECT_EQ(netd::request_host(h), "");
  h.target("/");
  h.erase(http::field::host);
  EXPECT_EQ(netd::request_host(h), "");
}

std::string client_hello(const std::string& sni) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* rb = BIO_new(BIO_s_mem());
  BIO* wb = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rb, wb);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);
  char* data;
  long n = BIO_get_mem_data(wb, &data);
  std::string out(data, static_cast<size_t>(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return out;
}

TEST(Netd, SniAndHostOfTheFirstBytes) {
  std::string hello = client_hello("api.example.com");
  EXPECT_EQ(netd::tls_sni(hello), "api.example.com");
  EXPECT_EQ(netd::tls_sni(client_hello("")), "");
  for (size_t n = 0; n < hello.size(); n += 7) (void)netd::tls_sni(hello.substr(0, n));
  EXPECT_EQ(
      netd::http_host("GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  a.example.com:8080 \r\n\r\n"),
      "a.example.com:8080");
  EXPECT_EQ(netd::http_host("GET / HTTP/1.0\r\n\r\n"), "");
}

TEST(EgressCa, MintedCertificatesVerifyAgainstTheCa) {
  std::string dir =
      std::filesystem::temp_directory_path() / ("upstream-ca-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ca::Files f = ca::ensure(dir);
  EXPECT_EQ(std::filesystem::status(f.key).permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  std::string cert = read_file(f.cert), key = read_file(f.key);
  // A second call keeps the CA (boxes already trust it): the same files, the same certificate.
  ca::Files again = ca::ensure(dir);
  EXPECT_EQ(again.cert, f.cert);
  EXPECT_EQ(read_file(again.cert), cert);
  ca::Minted m = ca::mint(cert, key, "api.example.com");
  BIO* b = BIO_new_mem_buf(m.cert_pem.data(), static_cast<int>(m.cert_pem.size()));
  X509* leaf = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  b = BIO_new_mem_buf(cert.data(), static_cast<int>(cert.size()));
  X509* root = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  ASSERT_TRUE(leaf && root);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, root);
  X509_STORE_CTX* vctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(vctx, store, leaf, nullptr);
  X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(vctx), "api.example.com", 0);
  EXPECT_EQ(X509_verify_cert(vctx), 1)
      << X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx));
  X509_STORE_CTX_free(vctx);
  // Not valid for another name.
  vctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(vctx, store, leaf, nullptr);
  X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(vctx), "other.example.com", 0);
  EXPECT_NE(X509_verify_cert(vctx), 1);
  X509_STORE_CTX_free(vctx);
  X509_STORE_free(store);
  X509_free(leaf);
  X509_free(root);
  EXPECT_THROW(ca::mint("junk", key, "x.example.com"), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace upstream
