// Errors inside the engine are exceptions; the public API and the apps turn them into messages and
// exit codes (DESIGN.md, principle 7). Each kind says whose fault the failure is.
#pragma once
#include <stdexcept>
#include <string>

namespace sdcpu {

// The base of every error sdcpu raises on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A model file or folder is malformed, truncated, inconsistent or lacks a tensor the network needs.
class ModelError : public Error {
 public:
  using Error::Error;
};

// A request is invalid: bad prompt bytes, sizes, steps, sampler name, ...
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// An I/O failure outside the model: cannot write the output file, etc.
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace sdcpu
