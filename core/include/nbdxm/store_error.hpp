#pragma once
// Turns an SQLite failure into nbdxm's one error type: a constraint or trigger refusal becomes Error(conflict) with
// a sentence in the user's terms (trigger messages already are sentences), never the raw SQLite text; a busy,
// read-only or damaged store becomes Error(failure) saying so.
#include <SQLiteCpp/Exception.h>

#include <string_view>
#include <utility>

#include "nbdxm/error.hpp"

namespace nbdxm {

// context, when given, leads the message: "cannot add disk d1 to job j1: <rule>".
Error store_error(const SQLite::Exception& e, std::string_view context = {});

// Runs f, translating any SQLite exception it throws with store_error.
template <class F>
decltype(auto) translate_store_errors(std::string_view context, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const SQLite::Exception& e) {
    throw store_error(e, context);
  }
}

}  // namespace nbdxm
