// Base of every exception zexec throws at an API boundary.
#pragma once

#include <stdexcept>

namespace zexec {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace zexec
