// The error types of docs/PROTOCOL.md §7, read from the document at test time: each maps to a
// TaskError subclass of its own named TYPE + "Error" (as in the Python client, whose
// tests/python/test_errors.py checks the same), and an error event of that type raises it.
// Any other type is a plain TaskError.
#include <cxxabi.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "client_support.hpp"
#include "zexec/zexec.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using test::FakeDaemon;
using test::quick;
using test::TempDir;
using test::wait_until;

std::string demangle(const std::type_info& t) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(t.name());
}

// The exact type strings of §7: the first cell of each data row of the tables under the heading
// numbered 7 that speaks of errors (up to the next heading of its level or higher), when that cell
// is one name, in backticks or not ("any name" is not a type).
std::vector<std::string> protocol_error_types() {
  std::ifstream in(std::string(ZEXEC_SOURCE_DIR) + "/docs/PROTOCOL.md");
  EXPECT_TRUE(in) << "cannot read docs/PROTOCOL.md";
  const std::regex heading(R"(^\s*(#+)\s+(.*)$)");
  const std::regex section7(R"(^(§\s*)?7\b.*[Ee]rror)");
  const std::regex type_cell(R"(^\s*\|\s*`?([A-Za-z_][A-Za-z0-9_]*)`?\s*\|)");
  std::vector<std::string> types;
  std::ptrdiff_t level = 0;  // of the §7 heading, once found
  bool in_table = false;
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, heading)) {
      if (level > 0 && m[1].length() <= level) break;
      if (level == 0 && std::regex_search(m[2].str(), section7)) level = m[1].length();
      continue;
    }
    const bool is_row = level > 0 && line.find_first_not_of(" \t") != std::string::npos &&
                        line[line.find_first_not_of(" \t")] == '|';
    // The first row of a table is its header.
    if (is_row && in_table && std::regex_search(line, m, type_cell)) types.push_back(m[1]);
    in_table = is_row;
  }
  return types;
}

// The class name of what `rethrow` throws, as a TaskError.
template <class F>
std::string task_error_class(F&& rethrow) {
  try {
    rethrow();
  } catch (const TaskError& e) {
    return demangle(typeid(e));
  } catch (const std::exception& e) {
    return "not a TaskError: " + demangle(typeid(e)) + ": " + e.what();
  }
  return "nothing thrown";
}

TEST(ErrorTypesTest, EveryProtocolTypeHasAClassOfItsOwnWithItsName) {
  const std::vector<std::string> types = protocol_error_types();
  ASSERT_GE(types.size(), 5u) << "§7 of docs/PROTOCOL.md was not found or not parsed";
  std::set<std::string> classes;
  for (const std::string& type : types) {
    std::string cls = task_error_class([&] { throw_task_error("t", type, "m"); });
    EXPECT_EQ(cls, "zexec::" + type + "Error") << "error type " << type;
    classes.insert(cls);
    try {
      throw_task_error("t", type, "m");
    } catch (const TaskError& e) {
      EXPECT_EQ(e.type(), type);
      EXPECT_EQ(e.task_name(), "t");
      EXPECT_EQ(e.message(), "m");
    }
  }
  EXPECT_EQ(classes.size(), types.size()) << "each type has a class of its own";
  EXPECT_EQ(classes.count("zexec::TaskError"), 0u);
}

TEST(ErrorTypesTest, OtherTypesAreAPlainTaskError) {
  for (const char* type : {"ValueError", "std::runtime_error", "NoSuchType", "", "queuefull"})
    EXPECT_EQ(task_error_class([&] { throw_task_error("t", type, "m"); }), "zexec::TaskError") << type;
}

TEST(ErrorTypesTest, AnErrorEventRaisesTheClassOfItsType) {
  std::vector<std::string> types = protocol_error_types();
  ASSERT_GE(types.size(), 5u) << "§7 of docs/PROTOCOL.md was not found or not parsed";
  types.push_back("ValueError");  // a task's own exception
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  std::vector<Future> fs;
  for (std::size_t i = 0; i < types.size(); ++i) fs.push_back(c.submit("task"));
  ASSERT_TRUE(wait_until([&] { return d.task_count() == types.size(); }));
  std::vector<proto::Event> events;
  for (std::size_t i = 0; i < types.size(); ++i)
    events.push_back(FakeDaemon::error(fs[i].id(), types[i], "from the daemon"));
  d.update(std::move(events));
  for (std::size_t i = 0; i < types.size(); ++i) {
    ASSERT_TRUE(fs[i].wait_done(10s));
    std::string want = types[i] == "ValueError" ? "zexec::TaskError" : "zexec::" + types[i] + "Error";
    EXPECT_EQ(task_error_class([&] { fs[i].result<void>(); }), want) << "error event of type " << types[i];
    EXPECT_EQ(task_error_class([&] { std::rethrow_exception(fs[i].exception()); }), want);
  }
}

}  // namespace
}  // namespace zexec
