// EventsTail returns whole lines only, as the file grows; ParseEventLine is
// tolerant of anything that is not an event object.
#include "worker/daemon/events_tail.h"

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/testing/temp_dir.h"

namespace dfkd::worker::daemon {
namespace {

void Append(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << text;
}

using Lines = std::vector<std::string>;

TEST(EventsTailTest, MissingFileGivesNoLines) {
  dfkd::testing::TempDir dir;
  EventsTail tail(dir.File("events.jsonl"));
  EXPECT_TRUE(tail.ReadNewLines().empty());
  Append(dir.File("events.jsonl"), "{\"event\":\"progress\"}\n");
  EXPECT_EQ(tail.ReadNewLines(), Lines{"{\"event\":\"progress\"}"});
}

TEST(EventsTailTest, PartialLineIsHeldUntilComplete) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("events.jsonl");
  EventsTail tail(path);
  Append(path, "{\"event\":\"progress\",\"st");
  EXPECT_TRUE(tail.ReadNewLines().empty());
  Append(path, "ep\":1}");
  EXPECT_TRUE(tail.ReadNewLines().empty());
  Append(path, "\n{\"event\":\"eval\"");
  EXPECT_EQ(tail.ReadNewLines(), Lines{"{\"event\":\"progress\",\"step\":1}"});
  Append(path, "}\r\n");
  EXPECT_EQ(tail.ReadNewLines(), Lines{"{\"event\":\"eval\"}"});
  EXPECT_TRUE(tail.ReadNewLines().empty());
}

TEST(EventsTailTest, FollowsGrowthWithoutRepeating) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("events.jsonl");
  EventsTail tail(path);
  Append(path, "a\nb\n");
  EXPECT_EQ(tail.ReadNewLines(), (Lines{"a", "b"}));
  EXPECT_TRUE(tail.ReadNewLines().empty());
  Append(path, "c\n\nd\n");
  EXPECT_EQ(tail.ReadNewLines(), (Lines{"c", "", "d"}));
  // Larger than one read chunk (64 KiB).
  std::string big(200 * 1024, 'x');
  Append(path, big + "\ne\n");
  Lines lines = tail.ReadNewLines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], big);
  EXPECT_EQ(lines[1], "e");
  EXPECT_EQ(tail.offset(), std::filesystem::file_size(path));
}

TEST(EventsTailTest, ReplacedFileIsReadFromItsStart) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("events.jsonl");
  EventsTail tail(path);
  Append(path, "first line of a long file\n");
  EXPECT_EQ(tail.ReadNewLines().size(), 1u);
  std::filesystem::remove(path);
  Append(path, "new\n");
  EXPECT_EQ(tail.ReadNewLines(), Lines{"new"});
}

TEST(EventsTailTest, ParseEventLineKeepsEventObjectsOnly) {
  EXPECT_FALSE(ParseEventLine(""));
  EXPECT_FALSE(ParseEventLine("not json"));
  EXPECT_FALSE(ParseEventLine("{\"event\":\"progress\""));  // cut short
  EXPECT_FALSE(ParseEventLine("[1,2]"));
  EXPECT_FALSE(ParseEventLine("{\"step\":3}"));
  EXPECT_FALSE(ParseEventLine("{\"event\":3}"));
  std::optional<nlohmann::json> event =
      ParseEventLine(R"({"event":"progress","step":40,"total":400,"train_loss":1.5})");
  ASSERT_TRUE(event);
  EXPECT_EQ((*event)["event"].get<std::string>(), "progress");
  EXPECT_EQ(EventNumber(*event, "step"), 40.0);
  EXPECT_EQ(EventNumber(*event, "train_loss"), 1.5);
  EXPECT_FALSE(EventNumber(*event, "train_top1"));
  EXPECT_FALSE(EventNumber(*event, "event"));  // not a number
}

}  // namespace
}  // namespace dfkd::worker::daemon
