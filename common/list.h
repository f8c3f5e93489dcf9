/* An intrusive, circular, doubly linked list (the kernel's and HAProxy's
 * shape): a struct list inside each element, and one as the head, which is
 * empty when it points at itself. Removal is O(1) without knowing the head. */
#ifndef LB_LIST_H
#define LB_LIST_H

#include <stddef.h>

struct list {
    struct list *prev, *next;
};

#define list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void list_init(struct list *l) {
    l->prev = l->next = l;
}

static inline int list_empty(const struct list *l) {
    return l->next == l;
}

/* Whether an element initialized with list_init() is in a list now. */
static inline int list_linked(const struct list *n) {
    return n->next != n;
}

static inline void list_insert_between(struct list *n, struct list *prev, struct list *next) {
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

/* At the front, and at the back. */
static inline void list_push(struct list *head, struct list *n) {
    list_insert_between(n, head, head->next);
}

static inline void list_append(struct list *head, struct list *n) {
    list_insert_between(n, head->prev, head);
}

/* Unlinks n; it is then an empty list of its own, safe to remove again. */
static inline void list_remove(struct list *n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    list_init(n);
}

/* The first element (the list must not be empty). */
#define list_first(head, type, member) list_entry((head)->next, type, member)

/* Walks every element; the current one may be removed. */
#define list_for_each_safe(pos, tmp, head)                                                         \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif
