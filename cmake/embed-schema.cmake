# Turns schema.sql into a C++ source file holding its text as a byte array (no delimiter can clash with the SQL).
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUTPUT}.tmp"
  "// Generated from schema.sql by cmake/embed-schema.cmake. Do not edit.\n"
  "#include \"nbdxm/schema.hpp\"\n"
  "namespace nbdxm::schema {\n"
  "namespace { constexpr char kText[] = {${bytes} 0x00}; }\n"
  "std::string_view text() { return {kText, sizeof(kText) - 1}; }\n"
  "}  // namespace nbdxm::schema\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
