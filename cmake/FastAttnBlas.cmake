# Finds a CBLAS and defines the imported target fastattn_blas.
#
# FASTATTN_BLAS = auto (default) | scipy-openblas | system
#   scipy-openblas: OpenBLAS from the `scipy-openblas32` Python wheel (what `pip install .` uses: it
#                   needs no root and no system package). Its symbols carry a `scipy_` prefix, and
#                   the Python package preloads its library before importing the extension.
#   system:         find_package(BLAS) plus a cblas.h (e.g. Debian's libopenblas-dev).
#   auto:           the wheel if the Python interpreter has it, else the system BLAS.
set(FASTATTN_BLAS "auto" CACHE STRING "BLAS to link: auto, scipy-openblas or system")
set_property(CACHE FASTATTN_BLAS PROPERTY STRINGS auto scipy-openblas system)

set(_fa_blas_found FALSE)
if(FASTATTN_BLAS STREQUAL "auto" OR FASTATTN_BLAS STREQUAL "scipy-openblas")
  if(NOT Python3_EXECUTABLE)
    find_package(Python3 COMPONENTS Interpreter)
  endif()
  if(Python3_EXECUTABLE)
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c
        "import scipy_openblas32 as o; print(o.get_include_dir()); print(o.get_lib_dir()); print(o.get_library(True))"
      OUTPUT_VARIABLE _fa_ob_out RESULT_VARIABLE _fa_ob_rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_fa_ob_rc EQUAL 0)
      string(REPLACE "\n" ";" _fa_ob_list "${_fa_ob_out}")
      list(GET _fa_ob_list 0 _fa_ob_inc)
      list(GET _fa_ob_list 1 _fa_ob_libdir)
      list(GET _fa_ob_list 2 _fa_ob_libname)
      add_library(fastattn_blas INTERFACE IMPORTED GLOBAL)
      target_include_directories(fastattn_blas INTERFACE ${_fa_ob_inc})
      target_link_libraries(fastattn_blas INTERFACE ${_fa_ob_libdir}/${_fa_ob_libname})
      target_compile_definitions(fastattn_blas INTERFACE FASTATTN_BLAS_PREFIX_SCIPY=1
        "FASTATTN_BLAS_NAME=\"OpenBLAS (scipy-openblas32 wheel)\"")
      set(FASTATTN_BLAS_LIBDIR ${_fa_ob_libdir} CACHE INTERNAL "")
      set(_fa_blas_found TRUE)
      message(STATUS "FastAttention BLAS: scipy-openblas32 at ${_fa_ob_libdir}/${_fa_ob_libname}")
    elseif(FASTATTN_BLAS STREQUAL "scipy-openblas")
      message(FATAL_ERROR "FASTATTN_BLAS=scipy-openblas but ${Python3_EXECUTABLE} cannot import "
                          "scipy_openblas32 (pip install scipy-openblas32)")
    endif()
  endif()
endif()

if(NOT _fa_blas_found)
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS)
  if(NOT BLAS_FOUND)
    unset(BLA_VENDOR)
    find_package(BLAS)
  endif()
  find_path(FASTATTN_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas)
  if(NOT BLAS_FOUND OR NOT FASTATTN_CBLAS_INCLUDE)
    message(FATAL_ERROR "No CBLAS found. Install the Python wheel (pip install scipy-openblas32) "
                        "or a system OpenBLAS (apt-get install libopenblas-dev).")
  endif()
  add_library(fastattn_blas INTERFACE IMPORTED GLOBAL)
  target_include_directories(fastattn_blas INTERFACE ${FASTATTN_CBLAS_INCLUDE})
  target_link_libraries(fastattn_blas INTERFACE ${BLAS_LIBRARIES})
  target_compile_definitions(fastattn_blas INTERFACE "FASTATTN_BLAS_NAME=\"system BLAS\"")
  message(STATUS "FastAttention BLAS: system ${BLAS_LIBRARIES}")
endif()
