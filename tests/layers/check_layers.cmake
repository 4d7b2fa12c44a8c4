# The include graph of the layered folders (docs/layers.md), checked as a test:
#  1. no header includes a header of a higher layer (core < noise < kernels < schedule < process
#     < losses < models < samplers; the top-level headers may include anything);
#  2. the light headers (the model concept, the prediction kinds, the parameterization, the
#     configuration) pull in neither xsimd nor Eigen nor nlohmann-json, however indirectly
#     (checked on the preprocessor's output).
# Run: cmake -DSOURCE_DIR=<repo> -DCXX=<compiler> -P tests/layers/check_layers.cmake
set(layers core noise kernels schedule process losses models samplers)
set(failures 0)
file(GLOB_RECURSE headers RELATIVE "${SOURCE_DIR}/include/diffusion" "${SOURCE_DIR}/include/diffusion/*/*.hpp")
foreach(h IN LISTS headers)
  string(REGEX MATCH "^[^/]+" layer "${h}")
  list(FIND layers "${layer}" rank)
  if(rank EQUAL -1)
    message(SEND_ERROR "layers: ${h} is in an unknown folder '${layer}'")
    math(EXPR failures "${failures} + 1")
    continue()
  endif()
  file(STRINGS "${SOURCE_DIR}/include/diffusion/${h}" includes REGEX "^#include \"")
  foreach(line IN LISTS includes)
    string(REGEX MATCH "\"([^\"]+)\"" _ "${line}")
    set(target "${CMAKE_MATCH_1}")
    if(target MATCHES "^\\.\\./([^/]+)/")
      set(other "${CMAKE_MATCH_1}")
    else()
      set(other "${layer}")  # same folder
    endif()
    list(FIND layers "${other}" other_rank)
    if(other_rank GREATER rank)
      message(SEND_ERROR "layers: ${h} (layer ${layer}) includes ${target} (higher layer ${other})")
      math(EXPR failures "${failures} + 1")
    endif()
  endforeach()
endforeach()
list(LENGTH headers n)
message(STATUS "layers: ${n} headers checked for upward includes")

foreach(light IN ITEMS core/config.hpp core/half.hpp process/prediction.hpp models/denoiser.hpp process/parameterization.hpp)
  execute_process(
    COMMAND "${CXX}" -std=c++20 -E -I "${SOURCE_DIR}/include" -x c++ "${SOURCE_DIR}/include/diffusion/${light}"
    OUTPUT_VARIABLE pre ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(SEND_ERROR "layers: ${light} does not preprocess on its own: ${err}")
    math(EXPR failures "${failures} + 1")
    continue()
  endif()
  foreach(heavy IN ITEMS "xsimd/" "Eigen/" "nlohmann/")
    string(FIND "${pre}" "/${heavy}" at)
    if(NOT at EQUAL -1)
      message(SEND_ERROR "layers: the light header ${light} pulls in ${heavy}")
      math(EXPR failures "${failures} + 1")
    endif()
  endforeach()
endforeach()
if(failures GREATER 0)
  message(FATAL_ERROR "layers: ${failures} failed")
endif()
message(STATUS "layers: 1 passed, 0 failed")
