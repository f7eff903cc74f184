#include "server/metrics.h"

#include <cstdio>

namespace upstream::server {

namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// Label values escape backslash, quote and newline.
std::string esc(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

void Histogram::observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) i++;
  counts_[i]++;
  sum_ += seconds;
  count_++;
}

std::string Histogram::render(const std::string& name, const std::string& labels) const {
  std::string out, sep = labels.empty() ? "" : ",";
  uint64_t cum = 0;
  for (size_t i = 0; i < kBounds.size(); i++) {
    cum += counts_[i];
    out += name + "_bucket{" + labels + sep + "le=\"" + num(kBounds[i]) + "\"} " +
           std::to_string(cum) + "\n";
  }
  cum += counts_[kBounds.size()];
  out += name + "_bucket{" + labels + sep + "le=\"+Inf\"} " + std::to_string(cum) + "\n";
  std::string l = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + l + " " + num(sum_) + "\n";
  out += name + "_count" + l + " " + std::to_string(count_) + "\n";
  return out;
}

void Metrics::request(const std::string& route, const std::string& method, int status,
                      double seconds) {
  std::lock_guard g(mu_);
  requests_[{route, method, status}]++;
  request_seconds_[route].observe(seconds);
}

void Metrics::exec_started(bool ok) {
  std::lock_guard g(mu_);
  (ok ? execs_ok_ : execs_failed_)++;
}

void Metrics::exec_done(double seconds) {
  std::lock_guard g(mu_);
  exec_seconds_.observe(seconds);
}

void Metrics::error(const std::string& code) {
  std::lock_guard g(mu_);
  errors_[code]++;
}

std::string Metrics::render(const std::map<std::string, uint64_t>& boxes, uint64_t inflight) const {
  std::lock_guard g(mu_);
  std::string o;
  o += "# HELP upstream_boxes Boxes by state.\n# TYPE upstream_boxes gauge\n";
  for (const char* s : {"creating", "starting", "running", "paused", "stopping", "stopped",
                        "archived", "removing"}) {
    auto it = boxes.find(s);
    o += std::string("upstream_boxes{state=\"") + s + "\"} " +
         std::to_string(it == boxes.end() ? 0 : it->second) + "\n";
  }
  o += "# HELP upstream_http_requests_total HTTP requests answered.\n"
       "# TYPE upstream_http_requests_total counter\n";
  for (const auto& [k, v] : requests_)
    o += "upstream_http_requests_total{route=\"" + esc(std::get<0>(k)) + "\",method=\"" +
         esc(std::get<1>(k)) + "\",status=\"" + std::to_string(std::get<2>(k)) + "\"} " +
         std::to_string(v) + "\n";
  o += "# HELP upstream_http_request_duration_seconds Time to answer a request (to the end of "
       "a streamed response).\n# TYPE upstream_http_request_duration_seconds histogram\n";
  for (const auto& [route, h] : request_seconds_)
    o += h.render("upstream_http_request_duration_seconds", "route=\"" + esc(route) + "\"");
  o += "# HELP upstream_http_requests_in_flight Requests being handled now.\n"
       "# TYPE upstream_http_requests_in_flight gauge\n";
  o += "upstream_http_requests_in_flight " + std::to_string(inflight) + "\n";
  o += "# HELP upstream_execs_total Execs asked for through the API, by whether they started.\n"
       "# TYPE upstream_execs_total counter\n";
  o += "upstream_execs_total{result=\"started\"} " + std::to_string(execs_ok_) + "\n";
  o += "upstream_execs_total{result=\"failed\"} " + std::to_string(execs_failed_) + "\n";
  o += "# HELP upstream_exec_duration_seconds Wall time of execs run through the API.\n"
       "# TYPE upstream_exec_duration_seconds histogram\n";
  o += exec_seconds_.render("upstream_exec_duration_seconds", "");
  o +=
      "# HELP upstream_errors_total Error replies by code.\n# TYPE upstream_errors_total counter\n";
  for (const auto& [code, v] : errors_)
    o += "upstream_errors_total{code=\"" + esc(code) + "\"} " + std::to_string(v) + "\n";
  return o;
}

}  // namespace upstream::server
