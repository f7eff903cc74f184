#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>

#include "cli/cli.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream::cli {

using nlohmann::json;

std::string limits_text(const Limits& l) {
  std::vector<std::string> parts;
  if (l.cpu_milli) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(*l.cpu_milli) / 1000.0);
    parts.push_back(std::string("cpus=") + buf);
  }
  if (l.memory) parts.push_back("memory=" + format_bytes(*l.memory));
  if (l.pids) parts.push_back("pids=" + std::to_string(*l.pids));
  if (l.disk) parts.push_back("disk=" + format_bytes(*l.disk));
  return parts.empty() ? "none" : join(parts, " ");
}

void print_table(const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(headers.size());
  for (size_t i = 0; i < headers.size(); i++) w[i] = headers[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); i++) w[i] = std::max(w[i], r[i].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string out;
    for (size_t i = 0; i < r.size(); i++) {
      out += r[i];
      if (i + 1 < r.size()) out += std::string(w[i] - r[i].size() + 3, ' ');
    }
    std::cout << out << "\n";
  };
  line(headers);
  for (const auto& r : rows) line(r);
  std::cout.flush();
}

void print_json(const json& j) { std::cout << j.dump(2) << std::endl; }

struct TerminalProgress::State {
  std::function<std::string()> status;
  int64_t started_us = mono_us();
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread ticker;
};

bool TerminalProgress::on_terminal() { return ::isatty(2) == 1; }

TerminalProgress::TerminalProgress(std::function<std::string()> status)
    : state_(std::make_shared<State>()) {
  state_->status = std::move(status);
  if (!on_terminal()) return;
  state_->ticker = std::thread([st = state_] {
    std::unique_lock lk(st->mu);
    bool shown = false;
    auto wait = std::chrono::milliseconds(500);
    while (!st->cv.wait_for(lk, wait, [&] { return st->done; })) {
      wait = std::chrono::milliseconds(200);
      std::string line;
      try {
        line = st->status();
      } catch (const std::exception&) {
        continue;
      }
      line += ", " + format_duration_ms(static_cast<uint64_t>(mono_us() - st->started_us) / 1000);
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      std::fflush(stderr);
      shown = true;
    }
    if (shown) {
      std::fputs("\r\033[K", stderr);
      std::fflush(stderr);
    }
  });
}

TerminalProgress::~TerminalProgress() {
  {
    std::lock_guard g(state_->mu);
    state_->done = true;
  }
  state_->cv.notify_all();
  if (state_->ticker.joinable()) state_->ticker.join();
}

uint64_t TerminalProgress::elapsed_ms() const {
  return static_cast<uint64_t>(mono_us() - state_->started_us) / 1000;
}

}  // namespace upstream::cli
