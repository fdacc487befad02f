/* Ends a reading of the op table's derivative language (ops.h): its words were defined
 * just before the reading (as C arithmetic in ops.h, as node-building in higher.c).
 * No include guard: it is included once after each reading. */
#undef G
#undef ONE
#undef ZERO
#undef A
#undef B
#undef OUT
#undef ADD
#undef SUB
#undef MUL
#undef DIV
#undef NEG
#undef POW
#undef LOG
#undef STEP
#undef GATE
#undef SELECT
