#include "common/strings.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/time.h"

namespace upstream {
namespace {

TEST(ParseSize, UnitsAreBinaryMultiples) {
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("512"), 512u);
  EXPECT_EQ(parse_size("1k"), 1024u);
  EXPECT_EQ(parse_size("512m"), 512ull << 20);
  EXPECT_EQ(parse_size("512M"), 512ull << 20);
  EXPECT_EQ(parse_size("2g"), 2ull << 30);
  EXPECT_EQ(parse_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_size("1.5g"), 3ull << 29);
  EXPECT_EQ(parse_size(" 1t "), 1ull << 40);
}

TEST(ParseSize, RejectsWhatItCannotReadExactly) {
  for (const char* bad : {"", "m", "-1", "1x", "1.5", "1..5m", "abc", "1 2", "1e3", ".5", "5.m"})
    EXPECT_THROW(parse_size(bad), Error) << bad;
  EXPECT_THROW(parse_size("99999999999999999999t"), Error);
  try {
    parse_size("12q", "memory limit");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("memory limit '12q'"), std::string::npos);
  }
}

TEST(ParseDuration, Units) {
  EXPECT_EQ(parse_duration_ms("30"), 30000u);
  EXPECT_EQ(parse_duration_ms("30s"), 30000u);
  EXPECT_EQ(parse_duration_ms("1.5s"), 1500u);
  EXPECT_EQ(parse_duration_ms("250ms"), 250u);
  EXPECT_EQ(parse_duration_ms("5m"), 300000u);
  EXPECT_EQ(parse_duration_ms("2h"), 7200000u);
  for (const char* bad : {"", "s", "-1s", "5 minutes", "1d", "1e9s"}) {
    EXPECT_THROW(parse_duration_ms(bad), Error) << bad;
  }
}

TEST(ParseCpus, MilliCpus) {
  EXPECT_EQ(parse_cpus_milli("1"), 1000u);
  EXPECT_EQ(parse_cpus_milli("0.5"), 500u);
  EXPECT_EQ(parse_cpus_milli("2.25"), 2250u);
  for (const char* bad : {"0", "0.001", "-1", "one", "1m", "99999999"}) {
    EXPECT_THROW(parse_cpus_milli(bad), Error) << bad;
  }
}

TEST(EnvEntries, KeyValue) {
  EXPECT_EQ(parse_env_entry("A=1"), std::make_pair(std::string("A"), std::string("1")));
  EXPECT_EQ(parse_env_entry("_X9=a=b"), std::make_pair(std::string("_X9"), std::string("a=b")));
  EXPECT_EQ(parse_env_entry("EMPTY="), std::make_pair(std::string("EMPTY"), std::string()));
  for (const char* bad : {"NOEQUALS", "=1", "1A=x", "A-B=1", "A B=1"}) {
    EXPECT_THROW(parse_env_entry(bad), Error) << bad;
  }
}

TEST(Labels, KeysAreRestricted) {
  EXPECT_EQ(parse_label("team=ml").second, "ml");
  EXPECT_EQ(parse_label("app.kubernetes.io/name=x").first, "app.kubernetes.io/name");
  EXPECT_EQ(parse_label("k=").second, "");
  for (const char* bad : {"novalue", "=v", "-k=v", "k k=v", "k=\x01"}) {
    EXPECT_THROW(parse_label(bad), Error) << bad;
  }
  EXPECT_THROW(parse_label(std::string(129, 'a') + "=v"), Error);
}

TEST(BoxNames, Rules) {
  EXPECT_TRUE(valid_box_name("a"));
  EXPECT_TRUE(valid_box_name("my-box_1.test"));
  EXPECT_TRUE(valid_box_name(std::string(63, 'a')));
  EXPECT_FALSE(valid_box_name(""));
  EXPECT_FALSE(valid_box_name(std::string(64, 'a')));
  EXPECT_FALSE(valid_box_name("-x"));
  EXPECT_FALSE(valid_box_name("a/b"));
  EXPECT_FALSE(valid_box_name("a b"));
  EXPECT_FALSE(valid_box_name("ä"));
}

TEST(Base64, RoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 300; i++) {
    auto enc = base64_encode(data);
    auto dec = base64_decode(enc);
    ASSERT_TRUE(dec.has_value()) << i;
    EXPECT_EQ(*dec, data);
    data.push_back(static_cast<char>(i * 7));
  }
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_FALSE(base64_decode("Zm9").has_value());
  EXPECT_FALSE(base64_decode("Zm=v").has_value());
  EXPECT_FALSE(base64_decode("Z!9v").has_value());
}

TEST(Format, BytesAndDurations) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(2ull << 30), "2.0 GiB");
  EXPECT_EQ(format_duration_ms(320), "320ms");
  EXPECT_EQ(format_duration_ms(1400), "1.4s");
  EXPECT_EQ(format_duration_ms(125000), "2m05s");
  EXPECT_EQ(format_duration_ms(3 * 3600000 + 12 * 60000), "3h12m");
}

TEST(ShellJoin, QuotesWhatAShellWouldSplit) {
  EXPECT_EQ(shell_join({"ls", "-la", "/tmp"}), "ls -la /tmp");
  EXPECT_EQ(shell_join({"echo", "a b", "it's", ""}), "echo 'a b' 'it'\\''s' ''");
}

TEST(RandomHex, LengthAndAlphabet) {
  auto a = random_hex(12), b = random_hex(12);
  EXPECT_EQ(a.size(), 12u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(random_hex(5).size(), 5u);
}

TEST(Split, KeepsEmptyFields) {
  EXPECT_EQ(split("a::b", ':'), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(split("", ':'), (std::vector<std::string>{""}));
  EXPECT_EQ(trim("  x \n"), "x");
}

TEST(Time, ParseWhen) {
  const int64_t now = 1'800'000'000'000;
  EXPECT_EQ(parse_when("now", now, "since"), now);
  EXPECT_EQ(parse_when("90m", now, "since"), now - 90 * 60'000);
  EXPECT_EQ(parse_when("7d", now, "since"), now - 7 * 86'400'000ll);
  EXPECT_EQ(parse_when("1.5d", now, "since"), now - 129'600'000ll);
  EXPECT_EQ(parse_when("2026-12-01", now, "since"), parse_time("2026-12-01T00:00:00.000Z"));
  EXPECT_EQ(parse_when("2026-12-01T10:00:00Z", now, "since"),
            parse_time("2026-12-01T10:00:00.000Z"));
  EXPECT_EQ(parse_when("2026-12-01T10:00:00.250Z", now, "since"),
            parse_time("2026-12-01T10:00:00.250Z"));
  for (const char* bad : {"", "yesterday", "-1d", "2026-13-01", "2026-12-01T25:00:00Z",
                          "2026-12-01T10:00:00", "2026-12-01x", "7dd"}) {
    try {
      parse_when(bad, now, "--since");
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << bad;
      EXPECT_NE(std::string(e.what()).find("--since"), std::string::npos) << e.what();
    }
  }
}

TEST(Strings, ClosestMatchNamesWhatAMistypedWordMeant) {
  std::vector<std::string> cmds = {"create", "exec", "ls", "rm", "cp", "snapshot", "inspect"};
  EXPECT_EQ(closest_match("craete", cmds), "create");  // a swap of neighbours is one edit
  EXPECT_EQ(closest_match("exce", cmds), "exec");
  EXPECT_EQ(closest_match("inspcet", cmds), "inspect");
  EXPECT_EQ(closest_match("snap", cmds), "snapshot");  // a prefix
  EXPECT_EQ(closest_match("lss", cmds), "ls");
  EXPECT_EQ(closest_match("deploy", cmds), std::nullopt);
  EXPECT_EQ(closest_match("", cmds), std::nullopt);
  EXPECT_EQ(closest_match("--tiemout", {"--timeout", "--tty", "--cwd"}), "--timeout");
}

}  // namespace
}  // namespace upstream
