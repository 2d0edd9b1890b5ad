#include "server/server_flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace halftime::server {
namespace {

using ::testing::HasSubstr;

struct Parsed {
  std::optional<ServerOptions> options;
  int exit_code = -1;
  std::string out, err;
};

Parsed Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "halftime-scheduler");
  std::ostringstream out, err;
  Parsed p;
  p.options = ParseServerFlags(args, out, err, &p.exit_code);
  p.out = out.str();
  p.err = err.str();
  return p;
}

TEST(ServerFlagsTest, DefaultsAndEveryFlag) {
  Parsed p = Parse({"--data-dir", "/var/lib/halftime"});
  ASSERT_TRUE(p.options) << p.err;
  EXPECT_EQ(p.options->data_dir, "/var/lib/halftime");
  EXPECT_EQ(p.options->listen, "127.0.0.1:50051");
  EXPECT_EQ(p.options->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(p.options->lease_grace, absl::Seconds(15));
  EXPECT_EQ(p.options->heartbeat_interval, absl::Seconds(2));
  EXPECT_EQ(p.options->tick_interval, absl::Milliseconds(250));

  p = Parse({"--data-dir",
             "d",
             "--listen",
             "0.0.0.0:0",
             "--metrics",
             "",
             "--lease-grace",
             "400ms",
             "--heartbeat-interval",
             "1",
             "--token-file",
             "t",
             "--tls-cert",
             "c",
             "--tls-key",
             "k",
             "--tls-ca",
             "a",
             "--device-price",
             "H100=2.5",
             "--device-price",
             "EPYC=0.1",
             "--default-device-price",
             "0.05",
             "--currency",
             "EUR"});
  ASSERT_TRUE(p.options) << p.err;
  const ServerOptions& o = *p.options;
  EXPECT_EQ(o.listen, "0.0.0.0:0");
  EXPECT_EQ(o.metrics_listen, "");
  EXPECT_EQ(o.lease_grace, absl::Milliseconds(400));
  EXPECT_EQ(o.tick_interval, absl::Milliseconds(100));  // a quarter of it
  EXPECT_EQ(o.heartbeat_interval, absl::Seconds(1));
  EXPECT_EQ(o.token_file, "t");
  EXPECT_EQ(o.tls.cert, "c");
  EXPECT_EQ(o.tls.key, "k");
  EXPECT_EQ(o.tls.ca, "a");
  EXPECT_EQ(o.prices.PriceFor("NVIDIA H100 80GB"), 2.5);
  EXPECT_EQ(o.prices.PriceFor("AMD EPYC 7B13"), 0.1);
  EXPECT_EQ(o.prices.PriceFor("other"), 0.05);
  EXPECT_EQ(o.prices.currency, "EUR");
}

TEST(ServerFlagsTest, BadFlagsExitTwoNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    const char* says;
  };
  const Case cases[] = {
      {{}, "--data-dir"},
      {{"--data-dir", "d", "--lease-grace", "soon"}, "--lease-grace"},
      {{"--data-dir", "d", "--lease-grace", "0s"}, "--lease-grace"},
      {{"--data-dir", "d", "--heartbeat-interval", "-1"},
       "--heartbeat-interval"},
      {{"--data-dir", "d", "--device-price", "H100"}, "--device-price"},
      {{"--data-dir", "d", "--device-price", "H100=-3"}, "--device-price"},
      {{"--data-dir", "d", "--default-device-price", "-1"},
       "--default-device-price"},
      {{"--data-dir", "d", "--no-such-flag"}, "--no-such-flag"},
  };
  for (const Case& c : cases) {
    Parsed p = Parse(c.args);
    EXPECT_FALSE(p.options) << c.says;
    EXPECT_EQ(p.exit_code, 2) << c.says;
    EXPECT_THAT(p.err, HasSubstr(c.says));
  }
}

TEST(ServerFlagsTest, HelpExitsZero) {
  Parsed p = Parse({"--help"});
  EXPECT_FALSE(p.options);
  EXPECT_EQ(p.exit_code, 0);
  EXPECT_THAT(p.out, HasSubstr("--data-dir"));
}

}  // namespace
}  // namespace halftime::server
