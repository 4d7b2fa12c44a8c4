# diffusion_find_required_dependency(<package> <version or ""> <debian-package>)
#
# find_package in CONFIG mode; if the package is missing, stop configuration with
# a message that names the Debian 12 package that provides it.
macro(diffusion_find_required_dependency pkg version debian)
  if(NOT "${version}" STREQUAL "")
    find_package(${pkg} ${version} CONFIG QUIET)
  else()
    find_package(${pkg} CONFIG QUIET)
  endif()
  if(NOT ${pkg}_FOUND)
    message(FATAL_ERROR
      "diffusion: the dependency '${pkg}' ${version} was not found.\n"
      "On Debian 12 install it with:  apt-get install ${debian}\n"
      "(or run: bash scripts/install-deps.sh)")
  endif()
endmacro()
