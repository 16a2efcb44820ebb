// The errors sdcpu reports. Every failure the library raises on purpose is a sdcpu::Error; the kind
// says whose fault it is, and what() says what to fix.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>

namespace sdcpu {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A model file or folder is malformed, truncated, inconsistent or lacks a tensor the network needs.
class ModelError : public Error {
 public:
  using Error::Error;
};

// A request is invalid: prompt bytes that are not UTF-8, sizes, steps, sampler name, ...
class InvalidArgument : public Error {
 public:
  using Error::Error;
  // `field`: the option at fault, by its GenerateOptions member name ("width", "cfg_scale", ...).
  InvalidArgument(const std::string& message, std::string field) : Error(message), field_(std::move(field)) {}
  // The option at fault when the error is about one option of a request; "" otherwise.
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// An I/O failure: a file that cannot be opened or written.
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace sdcpu
