#include <sched.h>

#include "common/config.h"

#include <fstream>

#include "common/test_temp_dir.h"

#include <gtest/gtest.h>

namespace cv {
namespace {

TEST(ConfigTest, HostPortForms) {
  auto hp = ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 0);
  hp = ParseHostPort("[::1]:8443");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 8443);
  for (const char* bad : {"127.0.0.1", ":80", "host:", "host:99999", "[::1]8443", "h:1x", "u@h:1", "h:1/x",
                          "[::1:80", "", "h:-1"}) {
    EXPECT_FALSE(ParseHostPort(bad)) << bad;
  }
}

TEST(ConfigTest, DefaultsDeriveFromRoot) {
  Flags f;
  f.root = "/srv/cv/";
  auto c = LoadConfig(f);
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_EQ(c->root, "/srv/cv");
  ASSERT_EQ(c->disks.size(), 6u);
  EXPECT_EQ(c->disks[5], "/srv/cv/disks/d5");
  EXPECT_EQ(c->index_dir, "/srv/cv/index");
  EXPECT_EQ(c->cert_file, "/srv/cv/tls/server.pem");
  EXPECT_EQ(c->run_dir, "/srv/cv/run");
  EXPECT_EQ(c->k, 4);
  EXPECT_EQ(c->m, 2);
  cpu_set_t cpus;  // default: one worker thread per CPU this process may run on
  ASSERT_EQ(sched_getaffinity(0, sizeof(cpus), &cpus), 0);
  EXPECT_EQ(c->threads, CPU_COUNT(&cpus));
  EXPECT_EQ(c->max_connections_per_address, 128);
  EXPECT_EQ(c->metrics_token, "/srv/cv/run/metrics.token");
  EXPECT_TRUE(c->generate_metrics_token);
}

// LoadConfig with `toml` as the --config file.
Result<Config> WithToml(const TempDir& dir, const std::string& toml) {
  const std::string file = dir.path() + "/c.toml";
  std::ofstream(file) << toml;
  Flags f;
  f.config_file = file;
  f.root = dir.path();
  return LoadConfig(f);
}

TEST(ConfigTest, ClusterSection) {
  TempDir dir;
  auto single = WithToml(dir, "");
  ASSERT_TRUE(single);
  EXPECT_FALSE(single->cluster);  // no section: a single node
  auto c = WithToml(dir,
                    "[cluster]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nnode_id = \"n1\"\n");
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_TRUE(c->cluster);
  EXPECT_EQ(c->etcd_endpoints, std::vector<std::string>{"http://127.0.0.1:2379"});
  EXPECT_EQ(c->node_id, "n1");
  EXPECT_EQ(c->lease_ttl_s, 10);
  const std::pair<const char*, const char*> bad[] = {
      {"[cluster]\nnode_id = \"n1\"\n", "'cluster.etcd_endpoints' is required"},
      {"[cluster]\netcd_endpoints = [\"http://e:1\"]\n", "'cluster.node_id' is required"},
      {"[cluster]\netcd_endpoints = \"http://e:1\"\nnode_id = \"n\"\n",
       "'cluster.etcd_endpoints' must be an array of strings"},
      {"[cluster]\netcd_endpoints = [\"http://e:1\"]\nnode_id = \"n\"\nlease_ttl_s = 1\n",
       "'cluster.lease_ttl_s' must be between 2 and 300"},
      {"[cluster]\netcd_endpoints = [\"http://e:1\"]\nnode_id = \"n\"\nleader = true\n",
       "unknown key 'cluster.leader'"},
      {"cluster = 1\n", "'cluster' must be a table"},
      {"[cluster]\netcd_endpoints = [\"http://e:1\", \"http://e:2\", \"http://e:3\", \"http://e:4\"]\nnode_id = \"n\"\n",
       "'cluster.etcd_timeout_ms' x the number of etcd_endpoints must be at most a third of "
       "lease_ttl_s (3333 ms)"},
  };
  for (const auto& [toml, message] : bad) {
    auto r = WithToml(dir, toml);
    ASSERT_FALSE(r) << toml;
    EXPECT_NE(r.error().ToString().find(message), std::string::npos)
        << toml << " -> " << r.error().ToString();
  }
}

}  // namespace
}  // namespace cv
