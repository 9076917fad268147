// The JSON of jobs (job_json.h): what the node stored and answered before the typed structs
// (the texts below, byte for byte as that code wrote them) reads into the structs and is
// written back unchanged; stored progress with fields missing still reads; nothing that is
// not what a field expects makes a conversion fail.
#include "admin/jobs/job_json.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <string>

namespace cv::admin::jobs {
namespace {

// Reads `text` as T and writes it back.
template <class T>
std::string RoundTrip(const std::string& text) {
  return ToJsonText(FromJsonText<T>(text));
}

constexpr char kDevice[] = "00112233445566778899aabbccddeeff";
const std::string kKey =
    std::string(R"({"device":")") + kDevice + R"(","type":"data","name":"ab"})";

TEST(JobJsonTest, ParamsAsTheRoutesWroteThemRoundTrip) {
  EXPECT_EQ(RoundTrip<DevicePurgeParams>(R"({"grace_seconds":604800,"device_name":"reception"})"),
            R"({"grace_seconds":604800,"device_name":"reception"})");
  EXPECT_EQ(RoundTrip<AccountPurgeParams>(R"({"grace_seconds":0,"devices":2})"),
            R"({"grace_seconds":0,"devices":2})");
  EXPECT_EQ(RoundTrip<CourierParams>(R"({"drive_bytes":0,"device_name":"nas","needed_bytes":9})"),
            R"({"drive_bytes":0,"device_name":"nas","needed_bytes":9})");
  EXPECT_EQ(RoundTrip<ScrubParams>(R"({"background":true,"max_bytes_per_sec":1048576})"),
            R"({"background":true,"max_bytes_per_sec":1048576})");
  // POST /repair, the node's own repair, a disk's removal.
  for (const char* text :
       {R"({"include_failed_disks":false})", R"({"include_failed_disks":true,"automatic":true})",
        R"({"include_failed_disks":true,"reason":"disk 2 removed"})"}) {
    EXPECT_EQ(RoundTrip<RepairParams>(text), text);
  }
  EXPECT_EQ(RoundTrip<DrainParams>(R"({"disk":3,"path":"/srv/d3"})"),
            R"({"disk":3,"path":"/srv/d3"})");
  // What the routes make now is what they made before.
  EXPECT_EQ(ToJsonText(ScrubParams{}), R"({"background":false,"max_bytes_per_sec":0})");
  EXPECT_EQ(ToJsonText(RepairParams{true, std::nullopt, "disk 2 removed"}),
            R"({"include_failed_disks":true,"reason":"disk 2 removed"})");
}

TEST(JobJsonTest, ProgressAnOlderBuildSavedRoundTrips) {
  const std::string purge =
      std::string(R"({"phase":"delete","devices":[")") + kDevice +
      R"("],"device_index":0,"objects_done":3,"bytes_done":300,)"
      R"("objects_total":5,"bytes_total":500,"attempts":2,"last_error":"EIO"})";
  EXPECT_EQ(RoundTrip<PurgeProgress>(purge), purge);
  const PurgeProgress p = FromJsonText<PurgeProgress>(purge);
  EXPECT_EQ(p.phase, "delete");
  EXPECT_EQ(p.devices, std::vector<std::string>{kDevice});
  EXPECT_EQ(p.attempts.attempts, 2u);

  const std::string courier =
      R"({"phase":"writing","snapshot_sha256":"5e","snapshot_at":"2025-01-31T12:00:00Z",)"
      R"("images":[{"drive":1,"file":"drive-1-of-2.img","bytes":123,"sha256":"ab","files":7}],)"
      R"("objects":7,"bytes_total":456,"drives":2,"drive":2,"bytes_written":200})";
  EXPECT_EQ(RoundTrip<CourierProgress>(courier), courier);

  const std::string scrub = R"({"objects_total":10,"objects_done":4,"shards_checked":24,)"
                            R"("bytes_checked":4096,"damaged_shards":1,"lost_stripes":0,)"
                            R"("damaged":["x stripe 0 shard 1: checksum"],"last":)" +
                            kKey + "}";
  EXPECT_EQ(RoundTrip<ScrubProgress>(scrub), scrub);
  EXPECT_EQ(RoundTrip<ScrubProgress>(R"({"objects_total":0})"), R"({"objects_total":0})");

  const std::string drain = R"({"objects_total":10,"pass":2,"objects_done":4,"stripes_moved":3,)"
                            R"("shards_moved":3,"bytes_moved":3072,"stripes_failed":0,)"
                            R"("problems":[],"last":)" +
                            kKey + "}";
  EXPECT_EQ(RoundTrip<DrainProgress>(drain), drain);
  const DrainProgress d = FromJsonText<DrainProgress>(drain);
  ASSERT_TRUE(d.last.has_value());
  EXPECT_EQ(d.last->device, kDevice);
  EXPECT_EQ(d.pass, 2u);
}

TEST(JobJsonTest, ResultsAsAnOlderBuildRecordedThemRoundTrip) {
  const std::string times =
      R"("started_at":"2025-01-31T12:00:00Z","finished_at":"2025-01-31T12:00:01.5Z")";
  const std::string device_receipt =
      R"({"objects_removed":5,"bytes_removed":500,"disk_bytes_reclaimed":4096,)" + times + "}";
  EXPECT_EQ(RoundTrip<PurgeReceipt>(device_receipt), device_receipt);
  const std::string account_receipt = R"({"devices_removed":2,"objects_removed":10,)"
                                      R"("bytes_removed":1000,"disk_bytes_reclaimed":0,)" +
                                      times + "}";
  EXPECT_EQ(RoundTrip<PurgeReceipt>(account_receipt), account_receipt);

  const std::string images =
      R"([{"drive":1,"file":"drive-1-of-1.img","bytes":33554432,"sha256":"ab","files":9}])";
  const std::string courier = R"({"images":)" + images +
                              R"(,"drives":1,"objects":7,"object_bytes":100,)"
                              R"("snapshot_at":"2025-01-31T11:59:00Z",)" +
                              times + "}";
  EXPECT_EQ(RoundTrip<CourierResult>(courier), courier);
  const std::string deleted =
      courier.substr(0, courier.size() - 1) + R"(,"images_deleted_at":"2025-02-01T00:00:00Z"})";
  EXPECT_EQ(RoundTrip<CourierResult>(deleted), deleted);
  EXPECT_FALSE(FromJsonText<CourierResult>(courier).images_deleted_at);

  const std::string repair =
      R"({"complete":true,"include_failed_disks":false,"stripes_examined":4,)"
      R"("bytes_rewritten":0,"stripes_repaired":1,"shards_rewritten":1,)"
      R"("stripes_lost":0,"still_queued":0,"lost":[]})";
  const std::string scrub = R"({"clean":false,"background":true,"objects":10,"shards_checked":60,)"
                            R"("bytes_checked":4096,"damaged_shards":1,"lost_stripes":0,)"
                            R"("damaged":["x"],)" +
                            times + R"(,"repair":)" + repair + "}";
  EXPECT_EQ(RoundTrip<ScrubResult>(scrub), scrub);
  // A pass over an empty index kept no counts: its "damaged" is null.
  const std::string empty = R"({"clean":true,"background":false,"objects":0,"shards_checked":0,)"
                            R"("bytes_checked":0,"damaged_shards":0,"lost_stripes":0,)"
                            R"("damaged":null,)" +
                            times + "}";
  EXPECT_EQ(RoundTrip<ScrubResult>(empty), empty);
  const std::string repaired = repair.substr(0, repair.size() - 1) + "," + times + "}";
  EXPECT_EQ(RoundTrip<RepairResult>(repaired), repaired);

  const std::string drain = R"({"disk":3,"path":"/srv/d3","complete":true,"objects":10,)"
                            R"("stripes_moved":3,"shards_moved":3,"bytes_moved":3072,)"
                            R"("stripes_failed":0,"extents_removed":2,"remaining_bytes":0,)"
                            R"("problems":[],"passes":1,)" +
                            times + R"(,"next":"remove it"})";
  EXPECT_EQ(RoundTrip<DrainResult>(drain), drain);
  EXPECT_EQ(RoundTrip<JobFailure>(R"({"error":"io: disk 2"})"), R"({"error":"io: disk 2"})");
}

TEST(JobJsonTest, JobAsTheApiAnswersItRoundTrips) {
  const std::string job =
      std::string(R"({"id":")") + kDevice +
      R"(","kind":"scrub","state":"scheduled","account":null,"device":null,)"
      R"("params":{"background":false,"max_bytes_per_sec":0},"progress":null,)"
      R"("result":null,"created_at":"2025-01-31T12:00:00Z",)"
      R"("run_after":"2025-01-31T12:00:00Z","started_at":null,"finished_at":null})";
  EXPECT_EQ(RoundTrip<JobView>(job), job);
}

TEST(JobJsonTest, MissingFieldsReadAsTheirDefaults) {
  // A purge that failed before its first batch: the runner's attempts and nothing else.
  const PurgeProgress p = FromJsonText<PurgeProgress>(R"({"attempts":1,"last_error":"EIO"})");
  EXPECT_TRUE(p.phase.empty());
  EXPECT_TRUE(p.devices.empty());
  EXPECT_EQ(p.device_index, 0u);
  EXPECT_EQ(p.attempts.last_error, "EIO");
  const ScrubProgress s = FromJsonText<ScrubProgress>("{}");
  EXPECT_FALSE(s.objects_total);
  EXPECT_FALSE(s.counts);
  const DrainProgress d = FromJsonText<DrainProgress>(R"({"objects_total":3,"pass":1})");
  EXPECT_EQ(d.objects_total, 3u);
  EXPECT_FALSE(d.counts);
  EXPECT_FALSE(d.last);
  EXPECT_FALSE(FromJsonText<DrainParams>("{}").disk);
  // No text yet, or not JSON: the defaults.
  EXPECT_EQ(ToJsonText(FromJsonText<CourierProgress>("")), ToJsonText(CourierProgress{}));
  EXPECT_EQ(ToJsonText(FromJsonText<CourierProgress>("{")), ToJsonText(CourierProgress{}));
}

TEST(JobJsonTest, FieldsOfAnotherTypeReadAsTheirDefaults) {
  const ScrubProgress s = FromJsonText<ScrubProgress>(
      R"({"objects_total":-1,"objects_done":"4","damaged":"x","last":{"device":1}})");
  EXPECT_FALSE(s.objects_total);
  ASSERT_TRUE(s.counts);
  EXPECT_EQ(s.counts->objects_done, 0u);
  EXPECT_TRUE(s.counts->damaged.empty());
  EXPECT_FALSE(s.counts->last);  // a key is all three strings or none
  const PurgeProgress p = FromJsonText<PurgeProgress>(R"({"phase":7,"devices":[1,"ab"]})");
  EXPECT_TRUE(p.phase.empty());
  EXPECT_EQ(p.devices, (std::vector<std::string>{"", "ab"}));  // the purge refuses "" as an id
  EXPECT_EQ(FromJsonText<JobView>(R"({"id":5,"result":{"error":"x"}})").id, "");
  EXPECT_EQ(json::value_to<JobFailure>(json::value("not an object")).error, "");
}

TEST(JobJsonTest, WithAttemptsKeepsTheKindsFieldsAsTheyAre) {
  const std::string progress =
      R"({"objects_total":10,"unknown":[1,2],"attempts":1,"last_error":"a"})";
  EXPECT_EQ(WithAttempts(progress, JobAttempts{2, "b"}),
            R"({"objects_total":10,"unknown":[1,2],"attempts":2,"last_error":"b"})");
  EXPECT_EQ(WithAttempts("", JobAttempts{1, "a"}), R"({"attempts":1,"last_error":"a"})");
}

TEST(JobJsonTest, ProgressCountsReadEveryKindsWorkDone) {
  const auto courier = json::value_to<ProgressCounts>(
      json::parse(R"({"bytes_written":5,"bytes_total":10,"objects":3})"));
  EXPECT_EQ(courier.bytes_done, 5u);
  EXPECT_EQ(courier.bytes_total, 10u);
  const auto purge = json::value_to<ProgressCounts>(
      json::parse(R"({"bytes_done":7,"objects_done":1,"objects_total":2})"));
  EXPECT_EQ(purge.bytes_done, 7u);
  EXPECT_EQ(purge.objects_total, 2u);
}

}  // namespace
}  // namespace cv::admin::jobs
