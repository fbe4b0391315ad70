// ChildProcess with /bin/sh scripts: exit codes, death by signal as 128+sig,
// Terminate reaching a trapping script, the log, the environment. Waiting is
// done by waiting for the child (or on a FIFO it writes), never by sleeping.
#include "worker/daemon/child_process.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "tests/testing/temp_dir.h"

namespace dfkd::worker::daemon {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

ChildSpec Shell(const std::string& script, const std::string& log_file = "") {
  ChildSpec spec;
  spec.argv = {"/bin/sh", "-c", script};
  spec.log_file = log_file;
  return spec;
}

// Blocks until the child has written a line to the FIFO (the child is then
// past everything its script does before that line).
std::string ReadFifoLine(const std::string& fifo) {
  std::ifstream in(fifo);
  std::string line;
  std::getline(in, line);
  return line;
}

TEST(ChildProcessTest, ReportsExitCodes) {
  dfkd::testing::TempDir dir;
  for (int code : {0, 1, 2, 3, 4, 42}) {
    auto child = ChildProcess::Start(Shell("exit " + std::to_string(code), dir.File("log")));
    EXPECT_EQ(child->Wait(), code);
    EXPECT_EQ(child->Poll(), code);  // stays known after the reap
  }
}

TEST(ChildProcessTest, DeathBySignalIs128PlusSignal) {
  dfkd::testing::TempDir dir;
  auto killed = ChildProcess::Start(Shell("kill -KILL $$", dir.File("log")));
  EXPECT_EQ(killed->Wait(), 128 + SIGKILL);
  auto usr1 = ChildProcess::Start(Shell("kill -USR1 $$", dir.File("log")));
  EXPECT_EQ(usr1->Wait(), 128 + SIGUSR1);
}

TEST(ChildProcessTest, TerminateDeliversSigtermToATrappingScript) {
  dfkd::testing::TempDir dir;
  const std::string fifo = dir.File("ready");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ChildSpec spec;
  spec.argv = {"/bin/sh", "-c",
               "trap 'echo stopping; exit 3' TERM; echo ready > \"$1\"; "
               "while :; do sleep 1; done",
               "sh", fifo};
  spec.log_file = dir.File("rank0.log");
  auto child = ChildProcess::Start(spec);
  EXPECT_EQ(ReadFifoLine(fifo), "ready");  // the trap is installed
  EXPECT_FALSE(child->Poll().has_value());
  EXPECT_TRUE(child->Terminate(SIGTERM));
  EXPECT_EQ(child->Wait(), 3);
  EXPECT_NE(ReadFile(dir.File("rank0.log")).find("stopping"), std::string::npos);
  EXPECT_FALSE(child->Terminate(SIGTERM));  // reaped: nothing is sent
}

TEST(ChildProcessTest, SigtermKillsAnUntrappingScriptEvenIfTheParentBlocksIt) {
  // dfkd-worker blocks SIGINT/SIGTERM for its sigwait thread; the child must
  // not inherit that mask.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  dfkd::testing::TempDir dir;
  auto child = ChildProcess::Start(Shell("while :; do sleep 1; done", dir.File("log")));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  EXPECT_FALSE(child->WaitFor(std::chrono::milliseconds(1)).has_value());
  child->Terminate(SIGTERM);
  EXPECT_EQ(child->Wait(), 128 + SIGTERM);
}

TEST(ChildProcessTest, AppendsStdoutAndStderrToTheLog) {
  dfkd::testing::TempDir dir;
  const std::string log = dir.File("rank0.log");
  std::ofstream(log) << "earlier attempt\n";
  auto child = ChildProcess::Start(Shell("echo to-stdout; echo to-stderr >&2; exit 5", log));
  EXPECT_EQ(child->Wait(), 5);
  EXPECT_EQ(ReadFile(log), "earlier attempt\nto-stdout\nto-stderr\n");
}

TEST(ChildProcessTest, PassesExtraEnvironmentAndWorkingDirectory) {
  dfkd::testing::TempDir dir;
  const std::string log = dir.File("log");
  ChildSpec spec = Shell("echo \"$RANK/$WORLD_SIZE\"; pwd", log);
  spec.env = {{"RANK", "1"}, {"WORLD_SIZE", "2"}};
  spec.working_dir = dir.path();
  auto child = ChildProcess::Start(spec);
  EXPECT_EQ(child->Wait(), 0);
  const std::string text = ReadFile(log);
  EXPECT_NE(text.find("1/2\n"), std::string::npos) << text;
  const std::string real = std::filesystem::canonical(dir.path()).string();
  EXPECT_NE(text.find(real + "\n"), std::string::npos) << text;
}

TEST(ChildProcessTest, SearchesPathForABareProgramName) {
  dfkd::testing::TempDir dir;
  ChildSpec spec;
  spec.argv = {"sh", "-c", "exit 6"};
  spec.log_file = dir.File("log");
  EXPECT_EQ(ChildProcess::Start(spec)->Wait(), 6);
}

TEST(ChildProcessTest, MissingProgramOrLogFolderThrows) {
  dfkd::testing::TempDir dir;
  ChildSpec missing;
  missing.argv = {dir.File("no-such-binary")};
  EXPECT_THROW(ChildProcess::Start(missing), std::runtime_error);
  EXPECT_THROW(ChildProcess::Start(Shell("exit 0", dir.File("no/such/folder/log"))),
               std::runtime_error);
}

TEST(ChildProcessTest, DestructorKillsARunningChild) {
  dfkd::testing::TempDir dir;
  pid_t pid = 0;
  {
    auto child = ChildProcess::Start(Shell("while :; do sleep 1; done", dir.File("log")));
    pid = child->pid();
  }
  // Reaped by the destructor: the pid is no longer our child.
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, WNOHANG), -1);
}

}  // namespace
}  // namespace dfkd::worker::daemon
