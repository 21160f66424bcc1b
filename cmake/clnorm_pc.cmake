# Run at install time (install(CODE) in CMakeLists.txt): writes clnorm.pc for the prefix actually installed to,
# which `cmake --install build --prefix DIR` may change after configuration.
# In: CLNORM_PC_IN, CLNORM_PC_OUT, PROJECT_VERSION, CLNORM_LIBDIR, CLNORM_INCLUDEDIR (GNUInstallDirs values).
set(CLNORM_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(v LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CLNORM_${v}}")
    set(CLNORM_PC_${v} "${CLNORM_${v}}")
  else()
    set(CLNORM_PC_${v} "\${prefix}/${CLNORM_${v}}")
  endif()
endforeach()
configure_file("${CLNORM_PC_IN}" "${CLNORM_PC_OUT}" @ONLY)
