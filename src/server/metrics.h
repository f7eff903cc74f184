// Prometheus metrics of the server: requests by route and status, their latency, execs and
// their latency, errors by code. Boxes by state are read from the engine at scrape time.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace upstream::server {

class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                                                     0.2,   0.5,   1,     2,    5,    10,   30};
  void observe(double seconds);
  std::string render(const std::string& name, const std::string& labels) const;

 private:
  std::array<uint64_t, kBounds.size() + 1> counts_{};
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  void request(const std::string& route, const std::string& method, int status, double seconds);
  // An exec the API was asked for: started, or refused by the engine.
  void exec_started(bool ok);
  // The wall time of an exec the API waited on or streamed.
  void exec_done(double seconds);
  void error(const std::string& code);
  // The text exposition format; `boxes` are counts by state.
  std::string render(const std::map<std::string, uint64_t>& boxes, uint64_t inflight) const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> request_seconds_;  // by route
  uint64_t execs_ok_ = 0, execs_failed_ = 0;
  Histogram exec_seconds_;
  std::map<std::string, uint64_t> errors_;
};

}  // namespace upstream::server
