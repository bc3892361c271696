// Base of every exception zexec throws at an API boundary.
#pragma once

#include <stdexcept>

#include "zexec/export.hpp"

namespace zexec {

class ZEXEC_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace zexec
