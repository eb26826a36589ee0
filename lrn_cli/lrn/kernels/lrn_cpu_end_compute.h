/* the compute type's macros (T, V, VM, MT, VL, SQRT_T, EXP_T, LOG_T; see lrn_cpu_body.h), undefined
 * after the last storage type computed in it, so that the next compute type defines its own */
#undef T
#undef V
#undef VM
#undef MT
#undef VL
#undef SQRT_T
#undef EXP_T
#undef LOG_T
