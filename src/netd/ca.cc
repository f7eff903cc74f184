#include "netd/ca.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "model/egress.h"

namespace upstream::ca {

namespace {

struct Del {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Del>;
using Cert = std::unique_ptr<X509, Del>;
using Bio = std::unique_ptr<BIO, Del>;

[[noreturn]] void ssl_fail(const std::string& what) {
  throw Error(Errc::internal, "egress CA: " + what);
}

Key new_key() {
  Key k(EVP_EC_gen("P-256"));
  if (!k) ssl_fail("generate a key");
  return k;
}

std::string pem_of(EVP_PKEY* k) {
  Bio b(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr))
    ssl_fail("write a key");
  char* data;
  long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string pem_of(X509* c) {
  Bio b(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(b.get(), c)) ssl_fail("write a certificate");
  char* data;
  long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

void add_ext(X509* c, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, c, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, Del> e(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!e || !X509_add_ext(c, e.get(), -1)) ssl_fail("add extension " + value);
}

Cert new_cert(const std::string& cn, long days_back, long days_on) {
  Cert c(X509_new());
  X509_set_version(c.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(c.get()), -days_back * 86400);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), days_on * 86400);
  X509_NAME* name = X509_get_subject_name(c.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("upstream"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return c;
}

}  // namespace

Files ensure(const std::string& dir) {
  Files f{dir + "/ca.crt", dir + "/ca.key"};
  struct stat st;
  if (::stat(f.cert.c_str(), &st) == 0 && ::stat(f.key.c_str(), &st) == 0) return f;
  ::mkdir(dir.c_str(), 0700);
  Key k = new_key();
  Cert c = new_cert("upstream egress CA " + random_hex(8), 1, 3650);
  X509_set_issuer_name(c.get(), X509_get_subject_name(c.get()));
  X509_set_pubkey(c.get(), k.get());
  add_ext(c.get(), c.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_ext(c.get(), c.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(c.get(), c.get(), NID_subject_key_identifier, "hash");
  if (!X509_sign(c.get(), k.get(), EVP_sha256())) ssl_fail("sign the CA");
  // The key first: a certificate on disk always has its key.
  write_file_atomic(f.key, pem_of(k.get()), 0600);
  write_file_atomic(f.cert, pem_of(c.get()), 0644);
  return f;
}

Minted mint(const std::string& ca_cert_pem, const std::string& ca_key_pem,
            const std::string& host) {
  Bio cb(BIO_new_mem_buf(ca_cert_pem.data(), static_cast<int>(ca_cert_pem.size())));
  Cert ca(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  Bio kb(BIO_new_mem_buf(ca_key_pem.data(), static_cast<int>(ca_key_pem.size())));
  Key ca_key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!ca || !ca_key) ssl_fail("cannot read the CA certificate or key");
  Key k = new_key();
  Cert c = new_cert(host, 1, 365);
  X509_set_issuer_name(c.get(), X509_get_subject_name(ca.get()));
  X509_set_pubkey(c.get(), k.get());
  add_ext(c.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_ext(c.get(), ca.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_ext(c.get(), ca.get(), NID_ext_key_usage, "serverAuth");
  add_ext(c.get(), ca.get(), NID_subject_alt_name,
          (egress::parse_ipv4(host) ? "IP:" : "DNS:") + host);
  add_ext(c.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
  if (!X509_sign(c.get(), ca_key.get(), EVP_sha256())) ssl_fail("sign a certificate");
  return {pem_of(c.get()) + pem_of(ca.get()), pem_of(k.get())};
}

}  // namespace upstream::ca
