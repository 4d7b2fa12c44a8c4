# diffusion_find_required_dependency(<package> <version or ""> <debian-package> [<what needs it>])
#
# find_package in CONFIG mode; if the package is missing, stop configuration with
# a message that names the Debian 12 package that provides it and, when given, what needs
# it (the library itself needs only xsimd, xtl and threads; Eigen is needed by some tests,
# examples and benchmarks, which say how to configure without them).
macro(diffusion_find_required_dependency pkg version debian)
  if(NOT "${version}" STREQUAL "")
    find_package(${pkg} ${version} CONFIG QUIET)
  else()
    find_package(${pkg} CONFIG QUIET)
  endif()
  if(NOT ${pkg}_FOUND)
    set(_diffusion_needed_by "")
    if(NOT "${ARGN}" STREQUAL "")
      set(_diffusion_needed_by "It is needed by ${ARGN}.\n")
    endif()
    message(FATAL_ERROR
      "diffusion: the dependency '${pkg}' ${version} was not found.\n"
      "${_diffusion_needed_by}"
      "On Debian 12 install it with:  apt-get install ${debian}\n"
      "(or run: bash scripts/install-deps.sh)")
  endif()
endmacro()
