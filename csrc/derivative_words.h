/* The derivative language's shared words (ops.h), in terms of the primitive ones each
 * reading defines just before it includes this: G A B OUT, NUM(x), OP1(E, x),
 * OP2(E, x, y), SELECT, and for the n-ary rules IN(k) and LOCAL(k). A new op needs no
 * new word: its row applies any other row through OP1/OP2. No include guard: included
 * once per reading, and derivative_language_end.h undoes it. */
#define ONE NUM(1.0)
#define ZERO NUM(0.0)
#define ADD(x, y) OP2(ADD, x, y)
#define SUB(x, y) OP2(SUB, x, y)
#define MUL(x, y) OP2(MUL, x, y)
#define DIV(x, y) OP2(DIV, x, y)
#define POW(x, y) OP2(POW, x, y)
#define GATE(x, s) OP2(GATE, x, s)
#define NEG(x) OP1(NEG, x)
#define LOG(x) OP1(LOG, x)
#define STEP(x) OP1(STEP, x)
