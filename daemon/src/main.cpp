// zexecd: parse the settings, set up logging, run the broker until told to stop.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "broker.hpp"
#include "options.hpp"

int main(int argc, char** argv) {
  zexecd::Options opts;
  try {
    if (!zexecd::parse_options(argc, argv, opts)) return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zexecd: %s\n", e.what());
    return 2;
  }
  auto logger = spdlog::stderr_color_mt("zexecd");
  spdlog::set_default_logger(logger);
  auto level = spdlog::level::from_str(opts.log_level);
  if (level == spdlog::level::off && opts.log_level != "off") {
    std::fprintf(stderr, "zexecd: --log-level: unknown level '%s'\n", opts.log_level.c_str());
    return 2;
  }
  spdlog::set_level(level);
  try {
    zexecd::Broker broker(opts);
    return broker.run();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
}
