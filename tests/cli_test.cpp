// `zexec`, the command line: status, submit and map against a real daemon; exit statuses.
#include <gtest/gtest.h>

#include <sstream>

#include "daemon_harness.hpp"

using namespace zexec::test;
using namespace std::chrono_literals;
namespace proto = zexec::proto;

namespace {

struct Run {
  int status = -1;
  std::string out, err;
};

// Runs a shell command line (so pipes work) and collects its exit status and output.
Run sh(const TempDir& dir, const std::string& command) {
  Process p({"/bin/sh", "-c", command}, {}, dir.path() + "/out", dir.path() + "/err");
  Run r;
  if (!p.wait_exit(60s)) return r;
  r.status = WEXITSTATUS(p.status());
  r.out = read_file(dir.path() + "/out");
  r.err = read_file(dir.path() + "/err");
  return r;
}

}  // namespace

TEST(Cli, SubmitPrintsTheResultAndExitsByOutcome) {
  TempDir dir;
  Daemon d(2);
  std::string zexec = bin_path("zexec") + " --endpoint " + d.endpoint();
  auto ok = sh(dir, zexec + " submit echo '{\"a\": [1, 2.5, \"x\", null, true]}'");
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_EQ(ok.out, "{\"a\": [1, 2.5, \"x\", null, true]}\n");
  auto plain = sh(dir, zexec + " submit echo hello");
  EXPECT_EQ(plain.out, "\"hello\"\n");  // not JSON: taken as a string
  auto failed = sh(dir, zexec + " submit fail boom");
  EXPECT_EQ(failed.status, 1);
  EXPECT_NE(failed.err.find("fail: std::runtime_error: boom"), std::string::npos) << failed.err;
  auto unknown = sh(dir, zexec + " submit nope");
  EXPECT_EQ(unknown.status, 1);
  EXPECT_NE(unknown.err.find("unknown task 'nope'"), std::string::npos) << unknown.err;
  auto usage = sh(dir, zexec + " frobnicate");
  EXPECT_EQ(usage.status, 2);
}

TEST(Cli, MapRunsOneTaskPerLineAndPrintsEveryResult) {
  TempDir dir;
  Daemon d(2);
  auto r =
      sh(dir, "printf 'a\\nb\\nc\\n' | " + bin_path("zexec") + " --endpoint " + d.endpoint() + " map echo");
  EXPECT_EQ(r.status, 0) << r.err;
  for (const char* line : {"\"a\"\n", "\"b\"\n", "\"c\"\n"})
    EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");  // no progress bar when stderr is not a terminal
}

TEST(Cli, StatusShowsWorkersAndTotals) {
  TempDir dir;
  Daemon d(2);
  std::string zexec = bin_path("zexec") + " --endpoint " + d.endpoint();
  ASSERT_EQ(sh(dir, zexec + " submit echo 1").status, 0);
  auto human = sh(dir, zexec + " status");
  EXPECT_EQ(human.status, 0) << human.err;
  EXPECT_NE(human.out.find("zexecd at " + d.endpoint()), std::string::npos) << human.out;
  auto json = sh(dir, zexec + " status --json");
  EXPECT_EQ(json.status, 0);
  EXPECT_NE(json.out.find("\"succeeded\": 1"), std::string::npos) << json.out;
  EXPECT_NE(json.out.find("\"state\": \"ready\""), std::string::npos) << json.out;
}

TEST(Cli, AnUnreachableDaemonIsExitStatusThree) {
  TempDir dir;
  auto r = sh(dir, bin_path("zexec") + " --endpoint " + dir.ipc("nobody.sock") + " status");
  EXPECT_EQ(r.status, 3);
  EXPECT_NE(r.err.find("no answer from zexecd"), std::string::npos) << r.err;
}

TEST(Cli, DrainStopsTheDaemonGracefully) {
  TempDir dir;
  Daemon d(1);
  auto r = sh(dir, bin_path("zexec") + " --endpoint " + d.endpoint() + " drain");
  EXPECT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(d.process().wait_exit(15s));
  EXPECT_TRUE(d.process().exited_ok());
}

TEST(Cli, CancelTakesAnotherClientsTaskByTheIdStatusShows) {
  TempDir dir;
  Daemon d(1);
  zmq::context_t ctx;
  RawClient c(ctx, d.endpoint());
  c.submit(1, "sleep", args(30.0));
  ASSERT_TRUE(c.collect([&] { return c.started.count(1) > 0; }, 10s));
  c.submit(2, "echo", args(2));  // queued behind the sleep (the worker is stuck in it)
  std::string zexec = bin_path("zexec") + " --endpoint " + d.endpoint();
  // Client ids start at a random number each daemon run (never reused): read it from welcome.
  std::string cid = std::to_string(c.welcome().client_id);
  auto status = sh(dir, zexec + " status");
  EXPECT_NE(status.out.find(cid + ":1 sleep"), std::string::npos) << status.out;  // CLIENT:TASK name
  auto queued = sh(dir, zexec + " cancel " + cid + ":2");
  EXPECT_EQ(queued.status, 0) << queued.out << queued.err;
  EXPECT_EQ(queued.out, cid + ":2: cancelled\n");
  auto running = sh(dir, zexec + " cancel " + cid + ":1");
  EXPECT_EQ(running.status, 1);
  EXPECT_NE(running.out.find("running"), std::string::npos);
  auto forced = sh(dir, zexec + " cancel --force " + cid + ":1");
  EXPECT_EQ(forced.status, 0) << forced.out << forced.err;
  // The owner hears of both as events, so its futures end.
  ASSERT_TRUE(c.wait_finals(2, 20s));
  EXPECT_EQ(c.finals[1].kind, proto::Outcome::cancelled);
  EXPECT_EQ(c.finals[2].kind, proto::Outcome::cancelled);
  EXPECT_EQ(sh(dir, zexec + " cancel nonsense").status, 2);
}
