// The routes of the HTTP API, as one table: the server labels its metrics and access log with
// them, the client builds its request paths from them, and a unit test checks the table against
// docs/openapi.json both ways.
#pragma once

#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upstream::api {

struct Route {
  std::string method;  // GET, POST, PUT or DELETE
  std::string path;    // a template: "/v1/boxes/{box}/execs/{exec}"
};

// Every route the server answers.
const std::vector<Route>& routes();

struct Match {
  std::string path;                           // the template
  std::map<std::string, std::string> params;  // its parameters as the request named them
  bool method_allowed = false;                // the template has a route for the method
};

// The template a request path matches (a literal segment wins over a parameter: import is not
// a snapshot's name), ignoring a query and a trailing slash; nullopt when none does.
std::optional<Match> match(std::string_view method, std::string_view path);

// The label of a request in metrics: its template, or "unmatched". Never a raw id, so the
// series stay bounded whatever clients send.
std::string route_label(std::string_view method, std::string_view path);

// A request path from a template, its parameters percent-encoded in the order they appear.
// Throws invalid_argument when the count differs from the template's.
std::string path(std::string_view tmpl, std::initializer_list<std::string> params);

}  // namespace upstream::api
