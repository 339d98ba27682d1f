# llhttp: Debian 12 has no library package, but node-llhttp ships llhttp 8.1's C
# sources. Build them into a static target; nothing of llhttp lives in this repo.
set(GB_LLHTTP_SRC_DIR "/usr/share/llhttp" CACHE PATH "llhttp C sources (Debian node-llhttp)")
set(GB_LLHTTP_INCLUDE_DIR "/usr/share/include/llhttp" CACHE PATH "llhttp header directory")
foreach(f api.c http.c llhttp.c)
  if(NOT EXISTS "${GB_LLHTTP_SRC_DIR}/${f}")
    message(FATAL_ERROR "llhttp source ${GB_LLHTTP_SRC_DIR}/${f} not found: apt-get install node-llhttp")
  endif()
endforeach()
if(NOT EXISTS "${GB_LLHTTP_INCLUDE_DIR}/llhttp.h")
  message(FATAL_ERROR "llhttp.h not found in ${GB_LLHTTP_INCLUDE_DIR}: apt-get install node-llhttp")
endif()
add_library(llhttp STATIC
  ${GB_LLHTTP_SRC_DIR}/api.c ${GB_LLHTTP_SRC_DIR}/http.c ${GB_LLHTTP_SRC_DIR}/llhttp.c)
# Third-party code: system include so its warnings never fail our -Werror build.
target_include_directories(llhttp SYSTEM PUBLIC ${GB_LLHTTP_INCLUDE_DIR})
set_target_properties(llhttp PROPERTIES C_STANDARD 99 POSITION_INDEPENDENT_CODE ON)
target_compile_options(llhttp PRIVATE -w)
