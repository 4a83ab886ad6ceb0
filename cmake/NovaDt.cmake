# Helpers shared by every CMakeLists.txt of nova-dt.

# nova_dt_add_test(<name> SOURCES <files...> LIBS <targets...> LABELS <unit|integration|e2e...>
#                  [TIMEOUT <seconds>])
# Builds one GoogleTest binary and registers it with CTest under the given labels. Unit tests are
# registered one CTest test per GoogleTest case; integration and e2e binaries run whole, because
# their fixtures share expensive set-up (a rig, a guest) across cases.
function(nova_dt_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_LABELS)
    message(FATAL_ERROR "nova_dt_add_test(${name}): LABELS is required")
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gmock GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${name} PRIVATE
    NOVA_DT_SOURCE_DIR="${PROJECT_SOURCE_DIR}" NOVA_DT_BINARY_DIR="${PROJECT_BINARY_DIR}")
  if("unit" IN_LIST T_LABELS)
    include(GoogleTest)
    gtest_discover_tests(${name} TEST_PREFIX "${name}." DISCOVERY_TIMEOUT 30
      PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT})
  else()
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT})
  endif()
endfunction()

# nova_dt_add_library(<name> SOURCES <files...> [DEPS <targets...>])
# One static library per agent folder; headers are included as "agent/<folder>/<file>.h".
function(nova_dt_add_library name)
  cmake_parse_arguments(L "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${L_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(${name} PUBLIC ${L_DEPS})
endfunction()
