/* Client connections: the state machine that reads requests, forwards them
 * to a backend and relays the responses (conn.c). */
#ifndef LB_CONN_H
#define LB_CONN_H

struct worker;

/* Takes an accepted connection (counted in g_connections by the caller). */
void client_accept(struct worker *w, int fd);
/* Closes the connections that wait for a request (drain). */
void clients_close_idle(struct worker *w);

#endif
