# nlohmann/json (header-only) for reading config.json in C++: from the `nlohmann-json` Python
# wheel (a build requirement of `pip install .`) or a system install (Debian nlohmann-json3-dev).
if(NOT Python3_EXECUTABLE)
  find_package(Python3 COMPONENTS Interpreter)
endif()
set(_fa_json_inc "")
if(Python3_EXECUTABLE)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c
      "import nlohmann_json, os; print(os.path.join(os.path.dirname(nlohmann_json.__file__), 'include'))"
    OUTPUT_VARIABLE _fa_json_inc RESULT_VARIABLE _fa_json_rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _fa_json_rc EQUAL 0)
    set(_fa_json_inc "")
  endif()
endif()
if(_fa_json_inc)
  add_library(fastattn_json INTERFACE IMPORTED GLOBAL)
  target_include_directories(fastattn_json SYSTEM INTERFACE ${_fa_json_inc})
  message(STATUS "FastAttention JSON: nlohmann-json wheel at ${_fa_json_inc}")
else()
  find_package(nlohmann_json 3.9 CONFIG)
  if(NOT nlohmann_json_FOUND)
    message(FATAL_ERROR "nlohmann/json not found: pip install nlohmann-json (or apt-get install nlohmann-json3-dev)")
  endif()
  add_library(fastattn_json INTERFACE IMPORTED GLOBAL)
  target_link_libraries(fastattn_json INTERFACE nlohmann_json::nlohmann_json)
endif()
