/* Ends a reading of the op table's derivative language (ops.h): its primitive words were
 * defined just before the reading, the shared ones by derivative_words.h. No include
 * guard: it is included once after each reading. */
#undef G
#undef A
#undef B
#undef OUT
#undef NUM
#undef OP1
#undef OP2
#undef SELECT
#undef IN
#undef LOCAL
#undef ONE
#undef ZERO
#undef ADD
#undef SUB
#undef MUL
#undef DIV
#undef POW
#undef GATE
#undef NEG
#undef LOG
#undef STEP
