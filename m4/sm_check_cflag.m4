# SM_CHECK_CFLAG(FLAG, ACTION-IF-OK): does the C compiler accept FLAG (with -Werror)?
AC_DEFUN([SM_CHECK_CFLAG], [
  AC_MSG_CHECKING([whether $CC accepts $1])
  sm_cflag_save=$CFLAGS
  CFLAGS="$CFLAGS -Werror $1"
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])],
    [AC_MSG_RESULT([yes]); $2], [AC_MSG_RESULT([no])])
  CFLAGS=$sm_cflag_save
])
