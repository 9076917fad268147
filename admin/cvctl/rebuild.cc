// `cvctl index rebuild`: the offline half of index recovery. It reads the node's
// configuration exactly as chunkvaultd does (common/config.h), so that it scans the same
// disks, and takes the same root lock, so that it never runs beside a live node.
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <cstdio>
#include <filesystem>

#include "admin/cvctl/cvctl.h"
#include "common/config.h"
#include "storage/storage.h"

namespace cv::cvctl {

int RebuildIndex(const RebuildArgs& args) {
  if (args.backup_dir.empty() && !args.without_backup) {
    std::fprintf(stderr,
                 "cvctl: index rebuild needs --from-backup DIR (accounts, devices and tokens "
                 "come from it) or, knowingly, --without-backup\n");
    return kExitUsage;
  }
  if (!args.backup_dir.empty() &&
      !std::filesystem::exists(std::filesystem::path(args.backup_dir) / "data.mdb")) {
    std::fprintf(stderr, "cvctl: %s holds no data.mdb: not an index backup\n",
                 args.backup_dir.c_str());
    return kExitUsage;
  }
  Flags flags;
  flags.config_file = args.config_file;
  flags.root = args.root;
  auto cfg = LoadConfig(flags);
  if (!cfg) {
    std::fprintf(stderr, "cvctl: configuration: %s\n", cfg.error().ToString().c_str());
    return kExitUsage;
  }
  // Logs go to stderr as JSON lines, like the node's; keep them to warnings and worse.
  SetLogLevel(LogLevel::kWarn);
  std::error_code ec;
  std::filesystem::create_directories(cfg->run_dir, ec);
  if (auto st = LockRoot(*cfg); !st) {
    std::fprintf(stderr, "cvctl: %s; stop chunkvaultd before rebuilding its index\n",
                 st.error().ToString().c_str());
    return kExitRefused;
  }
  storage::StoreOptions so;
  so.disks = cfg->disks;
  so.index_dir = cfg->index_dir;
  so.k = cfg->k;
  so.m = cfg->m;
  so.shard_unit = cfg->shard_unit_bytes;
  so.extent_bytes = cfg->extent_bytes;
  so.try_direct = cfg->try_direct;
  so.index_initial_map_bytes = cfg->index_initial_map_bytes;
  auto rep = storage::ObjectStore::RebuildIndex(so, args.without_backup ? "" : args.backup_dir);
  if (!rep) {
    std::fprintf(stderr, "cvctl: index rebuild failed: %s\n", rep.error().ToString().c_str());
    return kExitRefused;
  }
  if (args.json) {
    boost::json::array problems;
    for (const auto& p : rep->problems) problems.push_back(boost::json::value(p));
    boost::json::object o;
    o["index_dir"] = so.index_dir;
    o["extents_scanned"] = rep->extents_scanned;
    o["records_valid"] = rep->records_valid;
    o["records_invalid"] = rep->records_invalid;
    o["tombstones"] = rep->tombstones;
    o["objects"] = rep->objects;
    o["deleted_instances"] = rep->deleted_instances;
    o["incomplete_instances"] = rep->incomplete_instances;
    o["problems"] = std::move(problems);
    std::printf("%s\n", boost::json::serialize(o).c_str());
  } else {
    std::printf(
        "index rebuilt in %s: %llu objects from %llu extents (%llu valid records, %llu invalid, "
        "%llu tombstones; %llu deleted and %llu incomplete copies dropped)\n",
        so.index_dir.c_str(), static_cast<unsigned long long>(rep->objects),
        static_cast<unsigned long long>(rep->extents_scanned),
        static_cast<unsigned long long>(rep->records_valid),
        static_cast<unsigned long long>(rep->records_invalid),
        static_cast<unsigned long long>(rep->tombstones),
        static_cast<unsigned long long>(rep->deleted_instances),
        static_cast<unsigned long long>(rep->incomplete_instances));
    for (const auto& p : rep->problems) std::printf("  - %s\n", p.c_str());
    if (!rep->problems.empty()) {
      std::printf("start chunkvaultd, then run cvctl scrub and cvctl repair\n");
    }
  }
  return rep->problems.empty() ? kExitOk : kExitProblems;
}

}  // namespace cv::cvctl
