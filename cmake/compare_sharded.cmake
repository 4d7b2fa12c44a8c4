# The test example_sample_sharded (cmake -P): runs examples/sample_sharded under mpiexec with 1, 2 and
# 3 processes and fails unless every run passes its own checks and the three output files are
# byte-identical:
#   np 1, --verify   one block of all N rows in one sampler call (the unsplit run; --verify also
#                    compares it with a second unsplit batch on rank 0)
#   np 2             blocks of 501 and 500 rows (N = 1001: uneven)
#   np 3, --chunk 100  blocks of 334, 334, 333 rows, each sampled in sub-batches of at most 100 rows
#
#   cmake -D MPIEXEC=<mpiexec> -D NUMPROC_FLAG=<-n> -D EXE=<sample_sharded> -D OUT_DIR=<dir>
#         [-D SAMPLES=1001] -P compare_sharded.cmake
#
# With Open MPI, runs of more than one process get --oversubscribe (the CI machine may have fewer
# cores than ranks), and every run gets --allow-run-as-root when the test runs as root (CI does):
# Open MPI's mpirun refuses root without it. Other MPI implementations get neither flag.
foreach(var MPIEXEC NUMPROC_FLAG EXE OUT_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "compare_sharded.cmake: -D ${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED SAMPLES)
  set(SAMPLES 1001)
endif()
file(MAKE_DIRECTORY "${OUT_DIR}")

execute_process(COMMAND "${MPIEXEC}" --version OUTPUT_VARIABLE version ERROR_VARIABLE version RESULT_VARIABLE rc)
string(REGEX MATCH "Open MPI|OpenRTE|open-mpi[.]org" open_mpi "${version}")  # 4.x's mpiexec says OpenRTE
set(common_flags "")
set(parallel_flags "")
if(open_mpi)
  set(parallel_flags --oversubscribe)
  execute_process(COMMAND id -u OUTPUT_VARIABLE uid OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND uid STREQUAL "0")
    set(common_flags --allow-run-as-root)
  endif()
endif()

# run(<np> <output file> <extra arguments of the example>...)
function(run np file)
  set(flags ${common_flags})
  if(np GREATER 1)
    list(APPEND flags ${parallel_flags})
  endif()
  set(cmd "${MPIEXEC}" ${flags} ${NUMPROC_FLAG} ${np} "${EXE}" --samples ${SAMPLES} --out "${file}" ${ARGN})
  list(JOIN cmd " " shown)
  message(STATUS "running: ${shown}")
  file(REMOVE "${file}")
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 240)
  message("${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "compare_sharded: the run with ${np} process(es) failed (exit status '${rc}')")
  endif()
  if(NOT EXISTS "${file}")
    message(FATAL_ERROR "compare_sharded: the run with ${np} process(es) wrote no ${file}")
  endif()
endfunction()

run(1 "${OUT_DIR}/sharded_np1.bin" --verify)
run(2 "${OUT_DIR}/sharded_np2.bin")
run(3 "${OUT_DIR}/sharded_np3.bin" --chunk 100)

foreach(np 2 3)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${OUT_DIR}/sharded_np1.bin" "${OUT_DIR}/sharded_np${np}.bin"
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "compare_sharded: the samples gathered from ${np} processes differ from those of one process "
                        "(${OUT_DIR}/sharded_np1.bin vs sharded_np${np}.bin)")
  endif()
  message(STATUS "np ${np}: byte-identical to np 1")
endforeach()
